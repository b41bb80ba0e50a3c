"""The three ways to install (pip, conda, Docker) must ask for the same packages."""

from pathlib import Path

import yaml


def pins(lines):
    return dict(line.strip().split("==") for line in lines if line.strip() and not line.strip().startswith("#"))


def test_environment_yml_matches_requirements():
    requirements = pins(Path("requirements.txt").read_text().splitlines())
    environment = yaml.safe_load(Path("environment.yml").read_text())
    python = [d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert python == ["python=3.11"]
    assert pins(pip_section) == requirements


def test_requirements_are_exact_pins_with_cpu_torch():
    requirements = pins(Path("requirements.txt").read_text().splitlines())
    assert requirements["torch"] == "2.13.0"
    assert all(version and version[0].isdigit() for version in requirements.values())


def test_dockerfile_installs_the_pinned_requirements():
    dockerfile = Path("Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "-r requirements.txt" in dockerfile
