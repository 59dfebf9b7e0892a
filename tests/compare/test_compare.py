"""`labrun compare` on a store of known runs: statistics, formats, pair diffs, bad input."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from labrun.cli.compare import parse
from labrun.compare.report import compare
from labrun.compare.stats import group_stats
from labrun.errors import LabrunError
from tests.helpers import labrun_env, run_labrun

KNOWN = {  # hidden_size -> test/acc per seed
    "64": [0.80, 0.82, 0.81],
    "128": [0.85, 0.86, 0.88],
}


@pytest.fixture
def known_store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/known.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("known", artifact_location=(tmp_path / "art").as_uri())
    for hidden, accs in KNOWN.items():
        for seed, acc in enumerate(accs):
            run = client.create_run(
                exp,
                run_name=f"h{hidden}-s{seed}",
                tags={"labrun.sweep_id": "known-sweep", "labrun.seed": str(seed)},
            )
            client.log_batch(
                run.info.run_id,
                params=[
                    mlflow.entities.Param("model.hidden_size", hidden),
                    mlflow.entities.Param("seed", str(seed)),
                    mlflow.entities.Param("model.dropout", "0.5"),
                ],
            )
            for step, value in enumerate([acc - 0.1, acc - 0.05, acc]):
                client.log_metric(run.info.run_id, "val/acc", value, step=step)
            client.log_metric(run.info.run_id, "test/acc", acc)
            client.set_terminated(run.info.run_id)
    return uri


def test_group_stats_match_a_hand_computation(known_store: str) -> None:
    client = MlflowClient(known_store)
    runs = client.search_runs([client.get_experiment_by_name("known").experiment_id])
    groups = {
        g["model.hidden_size"]: g for g in group_stats(runs, ["model.hidden_size"], "test/acc")
    }
    for hidden, accs in KNOWN.items():
        g = groups[hidden]
        mean = sum(accs) / 3
        sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert g["n"] == 3
        assert g["mean"] == pytest.approx(mean)
        assert g["std"] == pytest.approx(sd)
        assert (g["ci_low"], g["ci_high"]) == pytest.approx((mean - half, mean + half))
    p = stats.ttest_ind(KNOWN["64"], KNOWN["128"], equal_var=False).pvalue
    assert groups["64"]["p_vs_best"] == pytest.approx(p)
    assert math.isnan(groups["128"]["p_vs_best"])  # the best group itself


def pooled_by_hidden_size(store: str) -> list[str]:
    """`labrun compare` options: the known sweep's runs pooled by hidden size."""
    return ["--tracking-uri", store, "--sweep", "known-sweep", "--group-by", "model.hidden_size"]


def test_compare_reports_in_every_format(known_store: str, tmp_path: Path, capsys) -> None:
    base = pooled_by_hidden_size(known_store)
    text = compare(parse([*base, "--format", "csv"]))
    assert "model.hidden_size,n,mean,std,ci_low,ci_high,delta,delta_low,delta_high" in text
    assert "g,g_low,g_high,p_vs_best,p_holm" in text
    assert "model.dropout" not in text  # the same in every run: not a difference
    md = compare(parse([*base, "--format", "md"]))
    assert "| model.hidden_size | n | mean |" in md and "Welch" in md
    out = tmp_path / "report"
    compare(
        parse(
            [
                *base,
                "--format",
                "html",
                "--plot",
                "curves",
                "--plot",
                "parallel",
                "--plot",
                "scatter",
                "-o",
                str(out),
            ]
        )
    )
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # curves, pooled curves, parallel, scatter
    assert (out / "curves.png").stat().st_size > 1000
    compare(parse([*base]))
    assert "test/acc by model.hidden_size" in capsys.readouterr().out


def test_pooled_table_gives_corrected_p_effect_sizes_and_seeds_advice(
    known_store: str, capsys
) -> None:
    """A third group makes two comparisons with the best: Holm's p differs from the raw one,
    and --seeds-needed prints the advice under the table."""
    client = MlflowClient(known_store)
    exp = client.get_experiment_by_name("known").experiment_id
    for seed, acc in enumerate([0.84, 0.86, 0.85]):
        run = client.create_run(exp, tags={"labrun.sweep_id": "known-sweep"})
        client.log_param(run.info.run_id, "model.hidden_size", "256")
        client.log_param(run.info.run_id, "seed", str(seed))
        client.log_metric(run.info.run_id, "test/acc", acc)
        client.set_terminated(run.info.run_id)
    base = pooled_by_hidden_size(known_store)
    text = compare(parse([*base, "--format", "csv", "--seeds-needed", "0.5%"]))
    lines = text.splitlines()
    pooled = [ln.split(",") for ln in lines[lines.index("# test/acc by model.hidden_size") + 1 :]]
    header, rows = pooled[0], {row[0]: row for row in pooled[1:]}
    col = {h: i for i, h in enumerate(header)}
    assert list(rows) == ["128", "256", "64"]  # best first
    raw = {h: float(rows[h][col["p_vs_best"]]) for h in ("256", "64")}
    (low, p_low), (high, p_high) = sorted((raw[h], h) for h in raw)  # Holm by hand:
    assert float(rows[p_low][col["p_holm"]]) == pytest.approx(2 * low, rel=2e-3)
    assert float(rows[p_high][col["p_holm"]]) == pytest.approx(max(2 * low, high), rel=2e-3)
    assert float(rows[p_low][col["p_holm"]]) != float(rows[p_low][col["p_vs_best"]])
    assert float(rows["64"][col["g"]]) < -2 < float(rows["64"][col["g_high"]]) + 2
    compare(parse([*base, "--seeds-needed", "0.5%"]))
    out = capsys.readouterr().out
    assert "seeds needed (test/acc, 80% power, 5% two-sided):" in out
    assert "3 seeds per group cannot tell 256 from 128 at a difference of 0.005" in out
    boot = compare(parse([*base, "--format", "csv", "--ci", "bootstrap"]))
    assert "percentile bootstrap" in compare(parse([*base, "--format", "md", "--ci", "bootstrap"]))
    assert boot != text


def test_compare_two_runs_shows_config_metric_and_provenance_diffs(known_store: str) -> None:
    client = MlflowClient(known_store)
    runs = client.search_runs(
        [client.get_experiment_by_name("known").experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    a, b = runs[0], runs[-1]
    text = compare(
        parse(["--tracking-uri", known_store, a.info.run_id, b.info.run_id, "--format", "csv"])
    )
    assert "model.hidden_size,64,128" in text
    assert "test/acc,0.8,0.88,0.08" in text
    assert "labrun.seed,0,2" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef0123456789abcdef'"),
        (["--experiment", "known", "--tag", "nothing=here"], "no runs match the selection"),
        (["--experiment", "known", "--metric", "test/f1"], "metric test/f1 was never logged"),
        (["--experiment", "nope"], "no experiment 'nope'"),
    ],
)
def test_compare_bad_input(args: list[str], message: str, known_store: str, tmp_path: Path) -> None:
    with pytest.raises(LabrunError, match=message):
        compare(parse(["--tracking-uri", known_store, *args]))
    proc = run_labrun(["compare", "--tracking-uri", known_store, *args], labrun_env(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr


class Tables(HTMLParser):
    """The tables of a page as lists of rows of cell texts, and the tags it has."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_tables_hold_the_runs_values_and_differences(
    known_store: str, tmp_path: Path
) -> None:
    client = MlflowClient(known_store)
    exp = client.create_experiment("escaping", artifact_location=(tmp_path / "e").as_uri())
    for name, note, acc in (("a<b>", "<i>x</i>", 0.5), ("c&d", "plain", 0.75)):
        run = client.create_run(exp, run_name=name)
        client.log_param(run.info.run_id, "model.note", note)
        client.log_param(run.info.run_id, "model.same", "1")
        client.log_metric(run.info.run_id, "test/acc", acc)
        client.set_terminated(run.info.run_id)
    out = tmp_path / "report"
    compare(
        parse(
            [
                "--tracking-uri",
                known_store,
                "--experiment",
                "escaping",
                "--format",
                "html",
                "-o",
                str(out),
            ]
        )
    )
    page = (out / "compare.html").read_text()
    parsed = Tables()
    parsed.feed(page)
    runs, differs = parsed.tables
    header, *rows = runs
    assert header == ["run", "status", "test/acc"]  # what a reader came for, first
    assert sorted(rows) == [["a<b>", "FINISHED", "0.5"], ["c&d", "FINISHED", "0.75"]]
    header, *rows = differs
    assert header == ["run", "model.note"]  # model.same: no difference
    assert sorted(rows) == [["a<b>", "<i>x</i>"], ["c&d", "plain"]]
    assert "i" not in parsed.tags and "b" not in parsed.tags  # values are text, never markup
    assert "a&lt;b&gt;" in page and "c&amp;d" in page

    grouped = tmp_path / "grouped"
    base = pooled_by_hidden_size(known_store)
    compare(parse([*base, "--format", "html", "-o", str(grouped)]))
    parsed = Tables()
    parsed.feed((grouped / "compare.html").read_text())
    runs_table, _, pooled = parsed.tables
    assert {row[0] for row in runs_table[1:]} == {f"h{h}-s{s}" for h in KNOWN for s in range(3)}
    assert pooled[0][:6] == ["model.hidden_size", "n", "mean", "std", "ci_low", "ci_high"]
    assert pooled[0][-2:] == ["p_vs_best", "p_holm"]
    by_size = {row[0]: row for row in pooled[1:]}
    assert by_size["128"][1:3] == ["3", f"{sum(KNOWN['128']) / 3:.4g}"]
    assert by_size["64"][1:3] == ["3", f"{sum(KNOWN['64']) / 3:.4g}"]
    assert by_size["128"][-2] == ""  # the best group is not tested against itself
    assert float(by_size["64"][-2]) < 0.05
    assert by_size["64"][-1] == by_size["64"][-2]  # one comparison: Holm changes nothing


def test_group_by_a_config_group_pools_by_the_class_it_builds(tmp_path: Path) -> None:
    """`--group-by model`: `model` has no value of its own; its `_target_` names the
    architecture (`model=lstm_classifier,kim_cnn`)."""
    uri = f"sqlite:///{tmp_path}/arch.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("arch", artifact_location=(tmp_path / "art").as_uri())
    accs = {"labrun.models.TextClassifier": [0.88, 0.89, 0.89], "labrun.models.KimCNN": [0.85]}
    for target, values in accs.items():
        for seed, acc in enumerate(values):
            run = client.create_run(exp, tags={"labrun.sweep_id": "arch-sweep"})
            client.log_param(run.info.run_id, "model._target_", target)
            client.log_param(run.info.run_id, "seed", str(seed))
            client.log_metric(run.info.run_id, "test/acc", acc)
            client.set_terminated(run.info.run_id)
    args = ["--tracking-uri", uri, "--sweep", "arch-sweep", "--format", "csv"]
    text = compare(parse([*args, "--group-by", "model"]))
    assert "model._target_,n,mean" in text
    assert "labrun.models.TextClassifier,3," in text and "labrun.models.KimCNN,1," in text
    with pytest.raises(LabrunError, match="--group-by optimizer: no selected run has that"):
        compare(parse([*args, "--group-by", "optimizer"]))
