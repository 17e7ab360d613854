"""The downstream task: `bench seg` / `bench tstr` end to end on simulator slides, resumable training, class remaps."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from histosynth.benchmark.downstream.data import load_tissue_set, remap_set
from histosynth.benchmark.downstream.kinds import TrainConfig, TrainingStopped
from histosynth.benchmark.downstream.scores import t_interval
from histosynth.benchmark.downstream.training import train_tissue
from histosynth.benchmark.results import BenchmarkRun
from histosynth.cli import main
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.errors import InputError
from histosynth.sources import build_source

# Small enough for the default run: 64 px patches, 32 px crops, two images a batch, a few steps.
FAST = ["--crop", "32", "--batch-size", "2", "--steps", "2", "--seeds", "2"]
SIM_TO_CAMELYON = np.array([0, 1, 1, 2, 1], np.uint8)  # background, stroma, epithelium, tumor, necrosis -> camelyon16


def _camelyon(sample):
    """The simulator sample with its map in the camelyon16 schema (normal tissue / tumor)."""
    tissue = np.where(sample.tissue == 255, 255, SIM_TO_CAMELYON[np.minimum(sample.tissue, 4)]).astype(np.uint8)
    return dataclasses.replace(sample, tissue=tissue, tissue_schema="camelyon16", nuclei=None)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine contended threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    # Three simulator "slides" (one per seed): train on two, test on the third.
    write_dataset(build_source("simulator", n=4, size=64, seed=11), root / "real", CardInfo("real", "r"))
    write_dataset(build_source("simulator", n=4, size=64, seed=12, nuclei_density=2.0), root / "synth", CardInfo("s", "s"))
    write_dataset({"test": build_source("simulator", n=3, size=64, seed=13)}, root / "test", CardInfo("test", "t"))
    write_dataset((_camelyon(s) for s in build_source("simulator", n=4, size=64, seed=14)), root / "camelyon",
                  CardInfo("c", "c"), tissue_schema="camelyon16")
    return root


def test_bench_seg_end_to_end_writes_valid_results_and_a_rerun_resumes_to_the_same_numbers(sets, tmp_path, capsys):
    out = tmp_path / "seg.json"
    args = ["bench", "seg", "--train", str(sets / "real"), "--test", str(sets / "test"), *FAST, "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| real |" in printed and "miou" in printed
    run = BenchmarkRun.load(out)  # schema-checked
    assert run.task == "seg" and set(run.data) == {"train", "test"} and run.data["test"].n == 3
    by_metric = {r.metric: r for r in run.results}
    assert {"miou", "mean_dice", "image_miou"} <= set(by_metric)
    for r in run.results:
        assert r.higher_is_better is True and r.extra["seeds"] == [0, 1] and len(r.extra["per_seed"]) == 2
        if r.value is not None:
            seeds = [v for v in r.extra["per_seed"] if v is not None]
            assert r.value == pytest.approx(np.mean(seeds), abs=1e-12)  # a mean of two floats: rounding only
            assert 0.0 <= r.ci_low <= r.value <= r.ci_high <= 1.0
    checkpoints = sorted((tmp_path / ".seg-checkpoints").glob("*/step-*/trainer_state.json"))
    assert len(checkpoints) == 2  # one finished training per seed (the loop keeps the newest checkpoint only)
    assert {p.parent.name for p in checkpoints} == {"step-00000002"}
    # A rerun finds both seeds trained and reproduces the file's numbers exactly.
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    assert main([*args[:-1], str(tmp_path / "again.json")] + ["--checkpoints", str(tmp_path / ".seg-checkpoints")]) == 0
    again = BenchmarkRun.load(tmp_path / "again.json")
    assert [(r.metric, r.value, r.extra["per_seed"]) for r in again.results] == \
           [(r.metric, r.value, r.extra["per_seed"]) for r in run.results]
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing retrained


def test_bench_tstr_scores_training_sets_side_by_side_with_a_real_row(sets, tmp_path, capsys):
    out = tmp_path / "tstr.json"
    assert main(["bench", "tstr", "--train", f"synth={sets / 'synth'}", "--real-train", str(sets / "real"),
                 "--test", f"{sets / 'test'}@test", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| real |" in printed and "| synth |" in printed
    run = BenchmarkRun.load(out)
    assert run.task == "tstr" and set(run.data) == {"train:real", "train:synth", "test"}
    rows = {(r.extra["train"], r.metric): r for r in run.results}
    assert ("real", "miou_ratio_to_real") not in rows
    ratio = rows[("synth", "miou_ratio_to_real")]
    expected = [a / b for a, b in zip(rows[("synth", "miou")].extra["per_seed"], rows[("real", "miou")].extra["per_seed"],
                                      strict=True)]
    assert ratio.extra["per_seed"] == pytest.approx(expected, rel=1e-12)  # one division each
    assert json.loads(out.read_text())["results"][0]["higher_is_better"] is True


def test_the_real_rows_are_scored_once_per_reference_and_read_back_after(sets, tmp_path):
    from histosynth.benchmark.downstream.kinds import train_config
    from histosynth.benchmark.downstream.run import run_downstream

    config = train_config("tiny", steps=2)
    trains = {"real": (sets / "real", "train"), "synth": (sets / "synth", "train")}
    options = dict(preset="tiny", config=config, seeds=[0, 1], real="real", task="tstr",
                   reference_cache=tmp_path / "refs")
    first = run_downstream(trains, (sets / "test", "test"), **options)
    assert len(list((tmp_path / "refs").glob("*.json"))) == 2  # one per seed of the real row, none for synth
    second = run_downstream(trains, (sets / "test", "test"), **options)
    assert second.settings["train_seconds"]["real"] == first.settings["train_seconds"]["real"]  # read back
    assert second.settings["train_seconds"]["synth"] != first.settings["train_seconds"]["synth"]  # trained again
    values = [[(r.metric, r.subject, r.value, r.extra.get("per_seed")) for r in run.results] for run in (first, second)]
    assert values[0] == values[1]


def test_schemas_that_differ_are_remapped_and_an_unmappable_class_is_a_clear_error(sets, tmp_path, capsys):
    base = ["bench", "seg", "--train", str(sets / "camelyon"), "--test", str(sets / "test"), *FAST[:-2], "--seeds", "1",
            "--steps", "1", "--out", str(tmp_path / "remap.json")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "'camelyon16' -> 'simulator-tissue'" in err and "normal" in err and "Traceback" not in err
    assert not (tmp_path / "remap.json").exists()
    assert main([*base, "--map", "normal=stroma"]) == 0
    run = BenchmarkRun.load(tmp_path / "remap.json")
    assert run.settings["mapping"] == {"normal": "stroma"} and run.settings["schema"] == "simulator-tissue"
    # The maps the model trained on: camelyon16 ids 0, 1, 2 become simulator ids 0, 1 (stroma), 3 (tumor).
    source = load_tissue_set(sets / "camelyon", "train")
    remapped = remap_set(source, "simulator-tissue", {"normal": "stroma"})
    expected = np.select([source.maps == 0, source.maps == 1, source.maps == 2], [0, 1, 3], 255)
    assert remapped.schema == "simulator-tissue" and np.array_equal(remapped.maps, expected)


def test_a_killed_and_resumed_training_ends_where_an_uninterrupted_one_does(sets, tmp_path):
    data = load_tissue_set(sets / "real", "train")
    config = TrainConfig(steps=5, batch_size=2, crop=32, checkpoint_every=2)
    whole = train_tissue(data, 5, "tiny", config, seed=3)

    def kill_after_three(step, loss):  # past the step-2 checkpoint, before the step-4 one
        return step == 3

    with pytest.raises(TrainingStopped):
        train_tissue(data, 5, "tiny", config, seed=3, checkpoints=tmp_path, stop=kill_after_three)
    resumed = train_tissue(data, 5, "tiny", config, seed=3, checkpoints=tmp_path)
    assert resumed.resumed_at == 2
    assert resumed.losses == whole.losses
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_t_interval_matches_the_textbook_formula_and_refuses_one_seed():
    mean, low, high = t_interval([0.5, 0.6, 0.7])
    q = 0.975  # with 2 degrees of freedom the t quantile has a closed form: (2q - 1) / sqrt(2 q (1 - q))
    t = (2 * q - 1) / np.sqrt(2 * q * (1 - q))
    assert mean == pytest.approx(0.6, abs=1e-15)
    assert high - mean == pytest.approx(t * 0.1 / np.sqrt(3), rel=1e-9)  # scipy's t.ppf is accurate to ~1e-12 relative
    assert low == pytest.approx(2 * mean - high, abs=1e-15)
    assert t_interval([0.4]) == (0.4, None, None)
    assert t_interval([0.1, 0.9], bounds=(0.0, 1.0))[1:] == (0.0, 1.0)


def test_training_on_the_test_set_is_refused(sets, tmp_path, capsys):
    assert main(["bench", "seg", "--train", f"{sets / 'test'}@test", "--test", str(sets / "test"), *FAST,
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "is the test set" in capsys.readouterr().err
    # Another folder, but the same simulator slide (seed 11) as the training set.
    write_dataset({"test": build_source("simulator", n=2, size=64, seed=11)}, tmp_path / "same-slide", CardInfo("x", "x"))
    assert main(["bench", "seg", "--train", str(sets / "real"), "--test", str(tmp_path / "same-slide"), *FAST,
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "overlapping (or unplaced) patches of slide(s) simulator:sim-11" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_split_by_region_may_share_a_slide_but_not_a_patch(sets, tmp_path):
    from histosynth.benchmark.downstream.data import check_disjoint, load_set
    from histosynth.sources.simulator import SimulatorSource

    train = load_set(sets / "real", "train", "tissue")  # sim-11 patches 0..3: x = 0, 64, 128, 192
    slide = SimulatorSource(n=8, size=64, seed=11)

    def held_out(name, indices):
        write_dataset({"test": [slide.sample(i) for i in indices]}, tmp_path / name, CardInfo(name, name))
        return load_set(tmp_path / name, "test", "tissue")

    check_disjoint(train, held_out("next-region", [4, 5, 7]), "real")  # the slide's other tiles: allowed
    with pytest.raises(InputError, match="overlapping"):
        check_disjoint(train, held_out("one-shared", [3, 6]), "real")
    shifted = [dataclasses.replace(s, provenance=dataclasses.replace(s.provenance, x=s.provenance.x - 32))
               for s in (slide.sample(4), slide.sample(6))]  # x = 224 overlaps the tile at 192
    write_dataset({"test": shifted}, tmp_path / "shifted", CardInfo("shifted", "half a tile over"))
    with pytest.raises(InputError, match="overlapping"):
        check_disjoint(train, load_set(tmp_path / "shifted", "test", "tissue"), "real")
    unplaced = [dataclasses.replace(s, provenance=dataclasses.replace(s.provenance, x=None, y=None))
                for s in (slide.sample(5),)]
    write_dataset({"test": unplaced}, tmp_path / "unplaced", CardInfo("unplaced", "no position"))
    with pytest.raises(InputError, match="unplaced"):
        check_disjoint(train, load_set(tmp_path / "unplaced", "test", "tissue"), "real")


def test_bench_seg_with_hovernet_scores_nuclei_end_to_end(sets, tmp_path, capsys):
    out = tmp_path / "hover.json"
    assert main(["bench", "seg", "--model", "hovernet", "--train", str(sets / "real"), "--test", str(sets / "test"),
                 "--crop", "64", "--batch-size", "2", "--steps", "2", "--seeds", "2", "--out", str(out)]) == 0
    assert "| real |" in capsys.readouterr().out
    run = BenchmarkRun.load(out)
    assert run.settings["model"] == "hovernet" and run.settings["mpp"] == 0.5 and run.settings["schema"] == "pannuke"
    by_metric = {r.metric: r for r in run.results}
    assert run.task_version == 2  # the nuclei task's version (results.MODEL_TASK_VERSIONS)
    assert {"pq", "dq", "sq", "pq_image_mean", "dq_image_mean", "sq_image_mean", "aji", "aji_plus", "mpq_plus",
            "pannuke_mpq", "pannuke_bpq", "f1_detection", "f1_detection_max_pairs"} <= set(by_metric)
    for r in run.results:
        assert r.higher_is_better is True and len(r.extra["per_seed"]) == 2
        if r.value is not None:
            assert 0.0 <= r.ci_low <= r.value <= r.ci_high <= 1.0
    # Pooled PQ = sum IoU / (TP + FP/2 + FN/2) and each IoU is at most 1, so a seed's PQ can not exceed its DQ.
    for pq, dq in zip(by_metric["pq"].extra["per_seed"], by_metric["dq"].extra["per_seed"], strict=True):
        assert pq <= dq + 1e-12


def test_nuclei_scores_name_each_convention_and_predicting_nothing_scores_zero():
    from types import SimpleNamespace

    from histosynth.benchmark.downstream.nuclei_task import nuclei_scores

    def nuclei(instances, types):
        ids = np.unique(instances)[1:]
        xy = np.array([np.argwhere(instances == i).mean(0)[::-1] for i in ids]).reshape(-1, 2)
        return SimpleNamespace(instances=instances, class_ids=np.asarray(types), types=np.asarray(types), centroids=xy)

    one = np.zeros((16, 16), np.int64)
    one[2:6, 2:6] = 1
    truth = [nuclei(one, [1]), nuclei(one, [1]), nuclei(np.zeros_like(one), [])]  # a third of the patches empty
    names = ["background", "neoplastic", "inflammatory"]
    nothing = nuclei_scores(truth, [nuclei(np.zeros_like(one), [])] * 3, names, mpp=0.25)
    assert nothing["pq"] == 0.0 and nothing["pq_image_mean"] == 0.0  # before: the empty share, 1/3
    assert nothing["aji"] == 0.0 and nothing["mpq_plus"] == 0.0 and nothing["f1_detection"] == 0.0
    assert nothing["f1/neoplastic"] == 0.0 and "f1/inflammatory" not in nothing  # a class on neither side
    perfect = nuclei_scores(truth, truth, names, mpp=0.25)
    assert perfect["pq"] == perfect["pq_image_mean"] == perfect["aji_plus"] == perfect["pannuke_bpq"] == 1.0
    assert perfect["mpq_plus"] == 0.5  # CoNIC: inflammatory is absent everywhere and scores 0
    assert perfect["f1/neoplastic"] == 1.0 and perfect["f1_with_tn/neoplastic"] == 1.0
    assert perfect["f1_detection"] == perfect["f1_detection_max_pairs"] == 1.0
