"""The training text reads like its register, and no sentiment class can be told by form within a register.

Each figure the datasheet (data/README.md) gives for headlines, tweets, hard cases and form is checked here,
with the word lists this file keeps. Real-text lengths were measured on public samples of about 900 to 1,500
real items per register.
"""

import pandas as pd
import pytest

DATA = "data/sentences.csv"
REAL_WORDS = {  # words per text in real text: 10th percentile, median, 90th percentile
    "headline": (4, 5, 6),
    "lead": (16, 21, 26),
    "wire": (10, 19, 34),
    "social": (7, 15, 22),
}
FORM = {  # features whose rate must not differ much between sentiment classes of one register
    "digit": r"\d",
    "weekday": r"\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b",
    "will": r"(?i)\bwill\b",
    # "to" before a lower-case word that is not an article, pronoun or possessive: mostly "X to VERB"
    "to VERB": r"\bto (?!(?:the|a|an|his|her|their|its|our|my|your|this|that|these|those|be|me|him|them|us|you|it)\b)"
    r"[a-z]{2,}\b",
    "final ?": r"\?\s*$",
    "URL": r"https?://|\bwww\.",
}
POSITIVE_WORDS = (
    r"(?i)\b(?:great|brilliant|wonderful|fantastic|amazing|awesome|lov(?:e|es|ed|ing|ely)|perfect|excellent|superb|"
    r"best|happy|glad|thrilled|delighted|beautiful|nice|good|impressive|incredible|wins?|won|gain(?:s|ed)?|"
    r"soar(?:s|ed)?|surge[sd]?|boost(?:s|ed)?|success(?:ful)?|strong(?:er)?|thanks|well done|congrats|"
    r"congratulations)\b"
)
NEGATIVE_WORDS = (
    r"(?i)\b(?:bad|terrible|awful|horrible|worst|hat(?:e|es|ed)|sad|angry|disappoint\w*|disaster\w*|useless|broken|"
    r"fail(?:s|ed|ure)?|los(?:e|es|t|ing|s)|crash\w*|slump\w*|plunge[sd]?|fall(?:s|en)?|fell|drop(?:s|ped)?|cuts?|"
    r"weak(?:er)?|poor|killer|sick|insane|dead|kill(?:s|ed|ing)?|ugh|annoy\w*|nightmare|mess|scandal|crisis|"
    r"die[sd]?|ruin\w*|shame)\b"
)
# Openings that sarcasm borrows ("Great, another update that deletes my photos"); each must be used sincerely
# (Positive) at least three times as often as sarcastically (Negative).
SARCASM_OPENINGS = ("great", "brilliant", "wonderful", "fantastic", "perfect", "lovely", "nice", "love", "thanks",
                    "amazing", "awesome")
SARCASM_MARKS = ("🙃",)
# Positive slang written with negative words ("that set was sick", "this track is fire").
SLANG = r"(?i)\b(?:killer|sick|insane|dead|fire|filthy|mad|wicked|unreal|crazy|slaps|beast|savage)\b"
# Words that name a topic outright; a headline without any names its subject and leaves the topic to knowledge.
TOPIC_WORDS = (
    r"(?i)\b(?:match\w*|goals?|league|cup|final|season|coach|striker|club|team|squad|title|champions?\w*|win|wins|"
    r"won|beat|beats|defeat\w*|draw|scores?|tournament|olympic\w*|race|transfer|injury|stadium|fans|"
    r"shares?|stocks?|markets?|profits?|loss(?:es)?|sales|revenue|earnings|company|firm|bank|economy|economic|"
    r"inflation|rates?|prices?|jobs|deal|merger|investors?|dividend|budget|tax\w*|tariffs?|trade|growth|recession|"
    r"film|movie|album|song|singer|band|actor|actress|show|series|tv|music|concert|tour|box office|oscars?|"
    r"grammys?|premiere|novel|book|festival|star|streaming|netflix|"
    r"app|apps|phone|smartphone|software|chip|chips|ai|internet|online|cyber\w*|hack\w*|data|tech|laptop|"
    r"console|game|games|gaming|robot\w*|satellite|rocket|launch|users|update|device|"
    r"election\w*|vote\w*|voters|minister|president|parliament|government|party|senate|congress|bill|law|"
    r"policy|campaign|mp|mps|pm|poll\w*|protest\w*|diplomat\w*|sanctions|war|troops|cabinet|opposition)\b"
)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(DATA, dtype=str, keep_default_na=False)


def form_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per register and feature, the largest difference in percentage points between two sentiment classes."""
    rates = pd.DataFrame({name: frame["text"].str.contains(pattern) for name, pattern in FORM.items()})
    by_class = rates.groupby([frame["register"], frame["sentiment"]]).mean().unstack()
    return pd.DataFrame({name: by_class[name].max(axis=1) - by_class[name].min(axis=1) for name in FORM}) * 100


def points_the_other_way(frame: pd.DataFrame) -> pd.Series:
    """Positive rows with more negative words than positive ones, and the reverse (negation, sarcasm, slang)."""
    positive = frame["text"].str.count(POSITIVE_WORDS)
    negative = frame["text"].str.count(NEGATIVE_WORDS)
    return ((frame["sentiment"] == "Positive") & (negative > positive)) | (
        (frame["sentiment"] == "Negative") & (positive > negative)
    )


def sarcasm_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """For each opening or mark that sarcasm uses: its Positive (sincere) and Negative (sarcastic) rows."""
    first_word = frame["text"].str.lower().str.extract(r"^(?:oh,? )?(\w+)", expand=False)
    patterns = {word: first_word == word for word in SARCASM_OPENINGS}
    patterns |= {mark: frame["text"].str.contains(mark, regex=False) for mark in SARCASM_MARKS}
    return pd.DataFrame({
        name: {"sincere": (rows & (frame["sentiment"] == "Positive")).sum(),
               "sarcastic": (rows & (frame["sentiment"] == "Negative")).sum()}
        for name, rows in patterns.items()
    }).T


def words(frame: pd.DataFrame) -> pd.Series:
    return frame["text"].str.split().str.len()


def test_headlines_as_written(data):
    headlines = data[data["register"] == "headline"]
    assert len(headlines) >= 1200
    cells = headlines[headlines["topic"] != ""].groupby(["topic", "sentiment"]).size()
    assert len(cells) == 15 and cells.min() >= 50
    assert words(headlines).between(3, 9).all()
    assert 0.04 <= headlines["text"].str.contains(r"\d").mean() <= 0.10  # real headlines: 7%
    future = headlines["text"].str.contains(r"\b[A-Za-z]+ to [a-z]+\b")  # "Minister to quit", "Shares to rise"
    assert (future.groupby(headlines["sentiment"]).sum() >= 20).all()  # in every sentiment class
    assert headlines["text"].str.contains(":").mean() >= 0.03
    assert headlines["text"].str.contains("[\"'‘“]").mean() >= 0.03  # quotes as claims
    named_only = ~headlines["text"].str.contains(TOPIC_WORDS) & headlines["text"].str.contains(r"\b[A-Z][a-z]")
    assert named_only[headlines["topic"] != ""].mean() >= 0.40  # the topic comes from knowing who is named


def test_tweets_as_they_are(data):
    social = data[data["register"] == "social"]
    text = social["text"]
    assert len(social) >= 2000
    assert (social["sentiment"] == "Neutral").mean() >= 0.40
    assert text.str.match(r"[a-z]").mean() <= 0.10  # real tweets: 4% start in lower case
    hashtags = text.str.count(r"#\w")
    assert (hashtags >= 2).sum() >= 0.10 * (hashtags >= 1).sum()  # chains of hashtags
    inside = text.str.contains(r"#\w+\s+(?![#@]|https?://)\w")  # a hashtag with words after it
    assert inside.sum() >= 0.10 * (hashtags >= 1).sum()
    assert text.str.contains(r"https?://").mean() >= 0.02
    assert text.str.contains(r"…|\.\.\.\s*$").mean() >= 0.02  # cut-off text
    assert text.str.match(r"@\w+").mean() >= 0.10  # replies in @user chains
    assert text.str.count(r"([a-z])\1{2,}").gt(0).mean() >= 0.01  # elongations: "sooo", "yesss"
    slang = text.str.contains(SLANG)
    assert (slang & (social["sentiment"] == "Positive")).sum() >= 30


def test_hard_cases_in_proportion(data):
    polar = data[data["sentiment"] != "Neutral"]
    share = points_the_other_way(polar).groupby([polar["register"], polar["sentiment"]]).mean()
    assert (share <= 0.12).all(), share.round(3)
    counts = sarcasm_counts(data)
    assert (counts["sincere"] >= 3 * counts["sarcastic"]).all(), counts


def test_natural_form_by_register(data):
    assert (data["register"] == "other").mean() <= 0.25
    spread = form_spread(data)
    assert (spread <= 10).all().all(), spread.round(1)
    for register, (low, median, high) in REAL_WORDS.items():
        length = words(data[data["register"] == register])
        assert abs(length.median() - median) <= 2, register
        assert length.quantile(0.1) >= low - 2 and length.quantile(0.9) <= high + 2, register


def test_wire_reads_like_financial_news(data):
    wire = data[data["register"] == "wire"]["text"]
    assert len(wire) >= 400
    assert wire.str.contains(r"\d").mean() >= 0.6  # real financial news: 72%
    currency = r"\b(?:EUR|USD|SEK|NOK|DKK|GBP|CHF|JPY|INR|AUD|mn|bn|million|billion|crore)\b|[$€£¥]"
    assert wire.str.contains(currency).mean() >= 1 / 3  # real: 47%
