"""The text DataModule on the real corpora, and on small files made to be wrong."""

from __future__ import annotations

import codecs
import functools
import hashlib
import http.server
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from labrun.data import TextClassificationData
from labrun.data.download import ensure_file
from labrun.data.samplers import BucketBatchSampler
from labrun.errors import DataError
from labrun.files import sha256_file
from tests.helpers import DATA_DIR


def build(cfg_data, **changes) -> TextClassificationData:
    from hydra.utils import instantiate

    dm = instantiate(cfg_data, **changes)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def http_server(tmp_path: Path):
    """A real HTTP server on loopback serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def dataset_contents(dm: TextClassificationData) -> dict:
    return {
        "splits": {
            s: ([x.tolist() for x in d.ids], d.labels.tolist()) for s, d in dm.datasets.items()
        },
        "itos": dm.preprocessor.itos,
        "classes": dm.classes,
        "stats": dm.stats,
        "fingerprint": dm.fingerprint,
    }


@pytest.mark.parametrize(
    ("data", "sizes", "classes"),
    [
        # TREC: 5,452 train lines (72 exact duplicates) and the 500-question test set.
        ("trec", {"test": 500}, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]),
        ("sst2", {"val": 872, "test": 1821}, ["0", "1"]),
        ("sms_spam", {}, ["ham", "spam"]),
        ("agnews", {}, ["1", "2", "3", "4"]),
        ("mr", {}, ["neg", "pos"]),
    ],
)
def test_real_corpora_load(data: str, sizes: dict[str, int], classes: list[str], make_cfg) -> None:
    dm = build(make_cfg(f"data={data}").data)
    assert dm.classes == classes
    for split, n in sizes.items():
        assert len(dm.datasets[split]) == n - dm.stats[f"{split}_duplicates_dropped"]
    total = sum(len(dm.datasets[s]) for s in ("train", "val", "test"))
    dropped = sum(v for k, v in dm.stats.items() if k.endswith("_dropped"))
    expected_rows = {
        "trec": 5452 + 500,
        "sst2": 6920 + 872 + 1821,
        "sms_spam": 5574,
        "agnews": 7600,
        "mr": 5331 * 2,
    }[data]
    assert total + dropped == expected_rows
    assert all(len(x) <= dm.preprocessor.max_length for x in dm.datasets["train"].ids)
    assert set(dm.fingerprint) == set(dm._relpaths())
    for rel, digest in dm.fingerprint.items():
        assert digest == sha256_file(DATA_DIR / rel)


def test_trec_reads_latin1_and_coarse_labels(make_cfg) -> None:
    dm = build(make_cfg("data=trec").data)
    counts = Counter(dm.classes[int(y)] for y in dm.datasets["test"].labels)
    assert counts == {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113}
    assert "sister\u00f0city" in dm.preprocessor.stoi  # the one Latin-1 byte 0xF0 in train


def test_sms_spam_keeps_every_line_despite_quotes(make_cfg) -> None:
    dm = build(make_cfg("data=sms_spam").data)
    rows = sum(
        dm.stats[f"{s}_rows"] + dm.stats[f"{s}_duplicates_dropped"] + dm.stats[f"{s}_empty_dropped"]
        for s in ("train", "val", "test")
    )
    assert rows == 5574  # the default csv quoting would merge lines and give 5,572


def test_split_is_seeded_and_stratified(make_cfg) -> None:
    a = build(make_cfg("data=sms_spam").data)
    b = build(make_cfg("data=sms_spam").data)
    c = build(make_cfg("data=sms_spam", "data.split_seed=7").data)
    assert torch.equal(a.datasets["test"].labels, b.datasets["test"].labels)
    assert [x.tolist() for x in a.datasets["test"].ids] == [
        x.tolist() for x in b.datasets["test"].ids
    ]
    assert [x.tolist() for x in a.datasets["test"].ids] != [
        x.tolist() for x in c.datasets["test"].ids
    ]
    share = {s: a.datasets[s].labels.float().mean().item() for s in ("train", "val", "test")}
    assert max(share.values()) - min(share.values()) < 0.01  # spam share equal across splits


def test_vocabulary_comes_from_train_only(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 apple banana\n1 cherry apple\n")
    (tmp_path / "test.txt").write_text("0 durian\n1 apple\n")
    dm = TextClassificationData(
        str(tmp_path),
        "prefixed",
        files={"train": "train.txt", "val": "train.txt", "test": "test.txt"},
    )
    dm.setup()
    assert dm.preprocessor.itos == ["<pad>", "<unk>", "apple", "banana", "cherry"]
    assert dm.datasets["test"].ids[0].tolist() == [1]  # durian is unknown


def test_cleaning_counts_empty_and_duplicate_rows(tmp_path: Path) -> None:
    (tmp_path / "d.tsv").write_bytes(
        "ham\tHello  World\r\nham\thello world\nspam\t   \nham\tCaf\u0065\u0301\nham\tcaf\u00e9\n"
        "spam\tWIN now\n".encode()
    )
    dm = TextClassificationData(
        str(tmp_path), "tsv", files={"train": "d.tsv", "val": "d.tsv", "test": "d.tsv"}
    )
    dm.setup()
    assert dm.stats["train_empty_dropped"] == 1
    assert dm.stats["train_duplicates_dropped"] == 2  # case and unicode form are cleaned away
    assert dm.stats["train_rows"] == 3


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path: Path) -> None:
    """A UTF-8 BOM (Windows editors write one) would make the first label 'ï»¿DESC', a bogus
    extra class; it is removed and counted, and CR LF line ends are counted too."""
    rows = "DESC:manner How ?\r\nNUM:date When ?\r\nDESC:def What ?\r\n"
    (tmp_path / "t.label").write_bytes(codecs.BOM_UTF8 + rows.encode())
    dm = TextClassificationData(
        str(tmp_path), "trec", files={"train": "t.label", "val": "t.label", "test": "t.label"}
    )
    dm.setup()
    assert dm.classes == ["DESC", "NUM"]
    assert dm.stats["boms_stripped"] == 1 and dm.stats["crs_removed"] == 3  # read once
    assert (
        dm.fingerprint["t.label"] == hashlib.sha256((tmp_path / "t.label").read_bytes()).hexdigest()
    )


def test_labels_given_as_numbers_match_the_files_labels(tmp_path: Path) -> None:
    """`data.labels=[0,1]` on a command line gives ints; the file's labels are text."""
    (tmp_path / "d.txt").write_text("0 apple pie\n1 cherry tart\n0 apple cake\n")
    files = {"train": "d.txt", "val": "d.txt", "test": "d.txt"}
    dm = TextClassificationData(str(tmp_path), "prefixed", files=files, labels=[0, 1])
    dm.setup()
    assert dm.classes == ["0", "1"] and dm.datasets["train"].labels.tolist() == [0, 1, 0]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.label").write_text(
        "DESC:manner How did it go ?\nNUM:date When ?\nbroken line here\n"
    )
    dm = TextClassificationData(str(tmp_path), "trec", files={"train": "t.label"})
    with pytest.raises(DataError, match=r"t\.label:3: malformed line"):
        dm.setup()


def test_undecodable_byte_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_bytes(b"0 fine\n1 caf\xe9\n")
    dm = TextClassificationData(str(tmp_path), "prefixed", files={"train": "s.txt"})
    with pytest.raises(DataError, match=r"s\.txt:2: cannot decode as utf-8"):
        dm.setup()


def test_nel_byte_is_not_a_line_break(tmp_path: Path) -> None:
    """MR files hold 0x85, which str.splitlines() would split on."""
    (tmp_path / "a.pos").write_bytes(b"good \x85 film\nfine\n")
    (tmp_path / "a.neg").write_bytes(b"bad\nawful\n")
    dm = TextClassificationData(
        str(tmp_path),
        "per_class",
        class_files={"pos": "a.pos", "neg": "a.neg"},
        encoding="latin-1",
        val_fraction=0.0,
        test_fraction=0.0,
    )
    rows = dm._read("a.pos", label="pos")
    assert [t for _, _, t in rows] == ["good \x85 film", "fine"]


def test_unknown_label_is_reported(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("0 fine\n2 odd\n")
    dm = TextClassificationData(
        str(tmp_path), "prefixed", files={"train": "s.txt"}, labels=["0", "1"]
    )
    with pytest.raises(DataError, match=r"s\.txt:2: unknown label '2'"):
        dm.setup()


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("\n\n")
    dm = TextClassificationData(str(tmp_path), "prefixed", files={"train": "e.txt"})
    with pytest.raises(DataError, match="split is empty"):
        dm.setup()


def test_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    dm = TextClassificationData(
        str(tmp_path), "trec", files={"train": "nope.label"}, download=False
    )
    with pytest.raises(DataError, match=r"missing data file .*nope\.label.*LABRUN_DATA_DIR"):
        dm.prepare_data()


def test_bucket_sampler_is_seeded_per_epoch_and_covers_everything() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(500)]
    s = BucketBatchSampler(lengths, batch_size=16, seed=3)
    first = list(s)
    assert sorted(i for b in first for i in b) == list(range(500))
    assert list(BucketBatchSampler(lengths, batch_size=16, seed=3)) == first
    s.set_epoch(1)
    assert list(s) != first
    pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in first)
    assert pad < 0.1 * sum(lengths)  # bucketing keeps padding small


def test_download_checks_the_sha256(http_server, tmp_path: Path) -> None:
    root, url = http_server
    payload = (DATA_DIR / "text/trec/TREC_10.label").read_bytes()
    (root / "TREC_10.label").write_bytes(payload)
    target = tmp_path / "data" / "text/trec/TREC_10.label"
    digest = hashlib.sha256(payload).hexdigest()
    assert ensure_file(target, f"{url}/TREC_10.label", digest) == target
    assert target.read_bytes() == payload
    other = tmp_path / "data" / "other.label"
    with pytest.raises(DataError, match="checksum mismatch"):
        ensure_file(other, f"{url}/TREC_10.label", "0" * 64)
    assert not other.exists()
    assert not list(other.parent.glob("*other.label*"))  # no partial download left behind


def test_download_failure_is_one_clear_error(http_server, tmp_path: Path) -> None:
    _, url = http_server
    with pytest.raises(DataError, match=r"missing data file .* download from .* failed"):
        ensure_file(tmp_path / "x.txt", f"{url}/does-not-exist", None)


@pytest.mark.parametrize("kind", ["text", "images"])
def test_lightning_sets_the_epoch_of_the_training_order(kind: str) -> None:
    """Lightning calls `set_epoch` on `loader.sampler` or `loader.batch_sampler.sampler` only:
    the order must change with the epoch through that call, and restart part-way through."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from labrun.data import ImageDataModule

    if kind == "text":
        dm = TextClassificationData(
            str(DATA_DIR),
            "trec",
            files={"train": "text/trec/train_5500.label"},
            encoding="latin-1",
            batch_size=32,
        )
    else:
        dm = ImageDataModule(str(DATA_DIR), "mnist", batch_size=256)
    dm.setup("fit")

    def order(epoch: int, start: tuple[int, int] | None = None) -> list:
        if start:
            dm.resume_at(*start)
        loader = dm.train_dataloader()
        _set_sampler_epoch(loader, epoch)
        return [str(b) for b in loader.batch_sampler]

    zero, one = order(0), order(1)
    assert zero != one
    assert order(1) == one  # seeded by (seed, epoch): the same again
    assert order(0, start=(1, 5)) == one[5:]  # a resumed run: epoch 1 from its 6th batch
    assert order(2) == order(2)


def test_cache_gives_the_same_tensors_and_is_keyed_by_data_settings_and_code(
    make_cfg, tmp_path: Path, caplog
) -> None:
    cache = tmp_path / "cache"
    data = make_cfg("experiment=trec_lstm").data
    cold = build(data, cache_dir=str(cache))
    assert cold.cache_hit is False and len(list(cache.iterdir())) == 1
    warm = build(data, cache_dir=str(cache))
    assert warm.cache_hit is True
    assert dataset_contents(warm) == dataset_contents(cold)
    uncached = build(data, cache_dir=None)
    assert uncached.cache_hit is None
    assert dataset_contents(uncached) == dataset_contents(cold)
    # Another preprocessing setting is another entry, not the cached one.
    shorter = build(data, cache_dir=str(cache), max_length=5)
    assert shorter.cache_hit is False and len(list(cache.iterdir())) == 2
    assert max(len(x) for x in shorter.datasets["train"].ids) == 5
    # Other file contents are another entry too.
    local = tmp_path / "data"
    (local / "text/trec").mkdir(parents=True)
    for name in ("train_5500.label", "TREC_10.label"):
        (local / "text/trec" / name).write_bytes((DATA_DIR / "text/trec" / name).read_bytes())
    with (local / "text/trec/train_5500.label").open("ab") as f:
        f.write(b"NUM:date When was labrun written ?\n")
    edited = build(data, cache_dir=str(cache), data_dir=str(local))
    assert edited.cache_hit is False
    assert edited.stats["train_rows"] + edited.stats["val_rows"] == (
        cold.stats["train_rows"] + cold.stats["val_rows"] + 1
    )
    # A damaged entry is rebuilt, with a warning, never used.
    for entry in cache.iterdir():
        entry.write_bytes(entry.read_bytes()[:100])
    rebuilt = build(data, cache_dir=str(cache))
    assert rebuilt.cache_hit is False and "unreadable data cache" in caplog.text
    assert dataset_contents(rebuilt) == dataset_contents(cold)
    assert build(data, cache_dir=str(cache)).cache_hit is True


def test_offline_a_missing_file_is_an_error_not_a_download(tmp_path: Path) -> None:
    """`LABRUN_OFFLINE` (set for every test) refuses to fetch from beyond this machine."""
    target = tmp_path / "text/trec/TREC_10.label"
    with pytest.raises(DataError, match=r"LABRUN_OFFLINE is set, so it is not downloaded from"):
        ensure_file(target, "https://cogcomp.seas.upenn.edu/Data/QA/QC/TREC_10.label", None)
    assert not target.parent.exists()  # nothing was started


@pytest.fixture
def silent_server():
    """A real TCP server that accepts and never answers: a network that black-holes traffic."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_download_that_hears_nothing_gives_up_in_seconds(silent_server, tmp_path) -> None:
    import time

    target = tmp_path / "text/trec/TREC_10.label"
    started = time.monotonic()
    with pytest.raises(DataError, match=rf"download from {silent_server}/TREC_10.label failed"):
        ensure_file(target, f"{silent_server}/TREC_10.label", None, timeout_s=1.0)
    assert time.monotonic() - started < 20  # a hang would be minutes; the timeout is 1 s
    assert not list(target.parent.glob("*TREC_10*"))  # nothing half-written left


def test_torchvision_downloads_give_up_too(silent_server, tmp_path: Path) -> None:
    """torchvision's `download_url` sets no timeout; `stall_timeout` gives its sockets one."""
    import socket
    import time

    from torchvision.datasets.utils import download_url

    from labrun.data.download import stall_timeout

    started = time.monotonic()
    with stall_timeout(1.0), pytest.raises(OSError):
        download_url(f"{silent_server}/train-images-idx3-ubyte.gz", str(tmp_path), None, None)
    assert time.monotonic() - started < 20
    assert socket.getdefaulttimeout() is None  # restored for everything else
