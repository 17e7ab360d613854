
import numpy as np
import pytest

from histosynth.benchmark.errors import DegenerateFeaturesWarning
from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.tasks.distribution import score_distribution
from histosynth.benchmark.tasks.masked_lpips import score_masked_lpips
from histosynth.cli import main
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.schema import Sample
from histosynth.sources import build_source


@pytest.fixture(scope="module")
def datasets_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_dataset(build_source("simulator", n=12, size=64, seed=1), root / "real", CardInfo("real", "r"))
    write_dataset(build_source("simulator", n=10, size=64, seed=2, nuclei_density=2.0), root / "fake", CardInfo("fake", "f"))
    return root


def test_bench_fd_cli_writes_results_table_and_chart(datasets_pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run.json"
    code = main(["bench", "fd", "--real", str(datasets_pair / "real"), "--fake", str(datasets_pair / "fake"),
                 "--encoders", "effnet-lite0", "--bootstrap", "20", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "effnet-lite0" in printed and "precision" in printed
    run = BenchmarkRun.load(out)
    fd = next(r for r in run.results if r.metric == "fd")
    assert fd.value > 0 and fd.ci_low <= fd.value <= fd.ci_high and (fd.n_real, fd.n_fake) == (12, 10)
    assert {r.metric for r in run.results} == {"fd", "kid", "precision", "recall", "density", "coverage"}
    assert run.encoders["effnet-lite0"]["weights"].startswith("sha256:")
    assert run.data["real"].content_hash.startswith("sha256:") and run.data["fake"].n == 10
    assert out.with_suffix(".png").stat().st_size > 5000


def test_identical_sets_score_zero(datasets_pair, tmp_path):
    run = score_distribution(datasets_pair / "real", datasets_pair / "real", metrics=["fd"], bootstrap=0,
                             cache_dir=tmp_path, progress=False)
    assert run.results[0].value == 0.0


def test_bad_inputs_are_clear_cli_errors(datasets_pair, tmp_path, capsys):
    base = ["bench", "fd", "--real", str(datasets_pair / "real"), "--out", str(tmp_path / "x.json")]
    assert main([*base, "--fake", str(tmp_path / "missing")]) == 2
    assert "argument --fake: " + str(tmp_path / "missing") + ": no such folder" in capsys.readouterr().err
    (tmp_path / "not-a-dataset").mkdir()
    assert main([*base, "--fake", str(tmp_path / "not-a-dataset")]) == 2
    assert "README.md: missing" in capsys.readouterr().err
    assert main([*base, "--fake", str(datasets_pair / "fake"), "--encoders", "incepton"]) == 2
    assert "did you mean 'inception'" in capsys.readouterr().err
    assert main([*base, "--fake", str(datasets_pair / "fake"), "--metrics", "fd,is"]) == 2
    assert "unknown metric" in capsys.readouterr().err
    assert main([*base, "--fake", str(datasets_pair / "fake"), "--encoders", "uni"]) == 2
    err = capsys.readouterr().err
    assert "MahmoodLab" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def with_masks(samples, seed):
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        mask = np.zeros(s.image.shape[:2], bool)
        r, c = rng.integers(8, 32, 2)
        mask[r : r + 24, c : c + 24] = True
        out.append(Sample(s.image, s.provenance, s.tissue, s.tissue_schema, s.nuclei, mask))
    return out


def test_masked_lpips_run_on_paired_datasets(tmp_path):
    real = list(build_source("simulator", n=6, size=64, seed=3))
    completed = [Sample(np.where(m.completion_mask[..., None], 255 - m.image, m.image).astype(np.uint8), m.provenance,
                        completion_mask=m.completion_mask) for m in with_masks(real, 0)]
    write_dataset(real, tmp_path / "real", CardInfo("r", "r"))
    write_dataset(completed, tmp_path / "done", CardInfo("d", "d"))
    run = score_masked_lpips(tmp_path / "real", tmp_path / "done", modes=["layer-masked", "bbox-crop"], pnet_rand=True)
    values = {r.metric: r for r in run.results}
    assert set(values) == {"lpips-layer-masked", "lpips-bbox-crop"}
    assert all(r.value > 0 and len(r.extra["per_sample"]) == 6 for r in values.values())
    write_dataset(real, tmp_path / "nomask", CardInfo("n", "n"))
    from histosynth.benchmark.errors import MetricInputError

    with pytest.raises(MetricInputError, match="no completion_mask"):
        score_masked_lpips(tmp_path / "real", tmp_path / "nomask", pnet_rand=True)


def test_memorization_flags_copies_of_the_training_set(datasets_pair, tmp_path):
    from histosynth.disk import iter_samples

    train = list(iter_samples(datasets_pair / "real"))
    copies = train[:4] + list(iter_samples(datasets_pair / "fake"))[:4]
    write_dataset(copies, tmp_path / "copies", CardInfo("c", "c"))
    run = score_distribution(datasets_pair / "real", tmp_path / "copies", metrics=["fd"], bootstrap=0, cache_dir=tmp_path,
                             progress=False, train=datasets_pair / "real")
    memo = next(r for r in run.results if r.metric == "memorization")
    assert memo.value == 0.5 and memo.extra["flagged"] == [0, 1, 2, 3]
    assert run.data["train"].n == 12


def test_records_kid_subsets_and_the_centered_fd_interval(datasets_pair, tmp_path):
    run = score_distribution(datasets_pair / "real", datasets_pair / "fake", bootstrap=30, cache_dir=tmp_path, progress=False)
    kid_result = next(r for r in run.results if r.metric == "kid")
    assert (kid_result.extra["subset_size"], kid_result.extra["subsets"]) == (10, 100)  # min(1000, 12, 10)
    assert kid_result.ci_low <= kid_result.value <= kid_result.ci_high and kid_result.ci_level == 0.95
    assert kid_result.ci_low < kid_result.ci_high and "unbiased MMD" in kid_result.extra["interval"]
    fd = next(r for r in run.results if r.metric == "fd")
    assert fd.extra["interval"] == "centred-percentile" and fd.ci_low <= fd.value <= fd.ci_high
    assert fd.extra["replicate_route"] == "gram" and len(fd.extra["ci_mc_error"]) == 2
    same = score_distribution(datasets_pair / "real", datasets_pair / "real", metrics=["kid"], cache_dir=tmp_path, progress=False)
    once = same.results[0].extra
    assert (once["subset_size"], once["subsets"], once["std"]) == (12, 1, None) and "computed once" in once["note"]


def test_identical_constant_sets_warn_and_record_prdc_as_null(tmp_path, capsys):
    black = [Sample(np.zeros_like(s.image), s.provenance) for s in build_source("simulator", n=8, size=64, seed=5)]
    write_dataset(black, tmp_path / "black", CardInfo("black", "b"))
    out = tmp_path / "run.json"
    with pytest.warns(DegenerateFeaturesWarning) as caught:
        code = main(["bench", "fd", "--real", str(tmp_path / "black"), "--fake", str(tmp_path / "black"), "--bootstrap", "10",
                     "--out", str(out), "--no-cache"])
    assert code == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "identical effnet-lite0 features (zero variance)" in messages and str(tmp_path / "black") in messages
    assert "PRDC under effnet-lite0 is undefined" in messages
    run = BenchmarkRun.load(out)
    prdc_results = [r for r in run.results if r.metric in ("precision", "recall", "density", "coverage")]
    assert len(prdc_results) == 4 and all(r.value is None and "k-NN" in r.extra["undefined"] for r in prdc_results)
    assert "undefined" in capsys.readouterr().out


def test_nan_features_are_an_error_naming_the_dataset(datasets_pair, tmp_path):
    import torch

    from histosynth.benchmark.encoders import ENCODERS, Encoder
    from histosynth.benchmark.errors import MetricInputError

    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1280), float("nan"))

    broken = Encoder(ENCODERS.get("effnet-lite0"), NaNNet())
    with pytest.raises(MetricInputError, match=rf"{datasets_pair / 'real'} \(split 'train'\): effnet-lite0 features: non-finite"):
        score_distribution(datasets_pair / "real", datasets_pair / "fake", prebuilt={"effnet-lite0": broken}, cache_dir=tmp_path,
                           progress=False)


def test_encoder_record_describes_a_user_weights_file(datasets_pair, tmp_path):
    import torch

    from histosynth.benchmark.encoders import load_encoder

    path = tmp_path / "my-inception.pth"
    torch.save(load_encoder("inception", pretrained=False, seed=1).backbone.state_dict(), path)
    run = score_distribution(datasets_pair / "real", datasets_pair / "fake", ["inception"], metrics=["fd"], bootstrap=0,
                             weights={"inception": str(path)}, cache_dir=tmp_path, progress=False)
    record = run.encoders["inception"]
    assert record["weights_source"].startswith(f"user-supplied file my-inception.pth ({record['weights']})")
    assert "not the catalog's weights" in record["weights_source"] and "2015" not in record["arch"]
    default = load_encoder("effnet-lite0").provenance()["weights_source"]
    assert "user-supplied" not in default
