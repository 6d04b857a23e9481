"""Checkpoints round-trip exactly; every corrupt, truncated, tampered or wrong-version file is refused."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from converter import CheckpointError, convert, load
from converter.snn.checkpoint import SEAL_KEY, load_checkpoint, manifest_sha256, save_checkpoint
from converter.snn.quantise import ClipFloor, InputQuant
from tests.converter.nets import NetConfig, images, make_net


@pytest.fixture(scope="module")
def net():
    x = images(8)
    return convert(
        make_net(NetConfig(pool="max")),
        x,
        T=8,
        name="tiny",
        labels=list("abcde"),
        provenance={"dataset": "synthetic"},
    )


@pytest.mark.parametrize("layout", ["dir", "tiny.safetensors"])
def test_round_trip(net, tmp_path, layout):
    path = tmp_path / layout
    manifest = net.save(path)
    again = load(path)
    x = images(5, seed=3)
    a, b = net.run(x), again.run(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.synaptic_additions, b.synaptic_additions)
    assert again.labels == list("abcde") and again.name == "tiny" and again.T == 8
    assert again.manifest["provenance"]["dataset"] == "synthetic"
    assert len(manifest["weights_sha256"]) == 64 and manifest["schema_version"] == 3


def test_round_trip_keeps_per_layer_windows(net, tmp_path):
    windows = {name: 2 + i % 5 for i, name in enumerate(net.windows)}
    mixed = net.with_windows(windows)
    manifest = mixed.save(tmp_path / "mixed")
    again = load(tmp_path / "mixed")
    assert again.windows == windows and manifest["windows"] == windows
    assert again.timesteps == mixed.timesteps
    assert manifest["layers"][0]["steps"] == windows["input"]
    x = images(5, seed=4)
    assert torch.equal(mixed.run(x).logits, again.run(x).logits)


@pytest.mark.parametrize("layout", ["dir", "tiny.safetensors"])
def test_files_are_readable_by_other_users(net, tmp_path, layout):
    net.save(tmp_path / layout)
    files = [p for p in (tmp_path / layout).rglob("*") if p.is_file()] or [tmp_path / layout]
    for f in files:  # a container running as another uid mounts these read-only
        assert f.stat().st_mode & 0o777 == 0o666 & ~_current_umask(), f


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(T=64),  # T is the longest window: it must agree with the windows
        lambda m: m.update(latency_steps=1),
        lambda m: m["windows"].update(input=float("inf")),
        lambda m: m["windows"].update(input=10**9),
    ],
)
def test_windows_that_disagree_or_are_absurd_are_refused(net, tmp_path, edit):
    path = _dir(net, tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError):
        load(path)


def test_a_correction_that_fits_no_layer_is_refused(tmp_path):
    x = images(16)
    net = convert(make_net(NetConfig()), x, T=4, method="error-aware")
    first = next(iter(net.corrections))
    net.corrections[first] = torch.zeros(99)
    net.save(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="bias correction"):
        load(tmp_path / "bad")


def _dir(net, tmp_path):
    path = tmp_path / "ck"
    net.save(path)
    return path


def _edited(net, tmp_path, edit, reseal=False):
    """A saved checkpoint whose manifest ``edit`` changed in place (sealed again when ``reseal``: the
    manifest's seal and the weights file's, as a writer with a bug would)."""
    from safetensors.torch import load_file

    path = _dir(net, tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    if reseal:
        m["manifest_sha256"] = manifest_sha256(m)
        weights = path / "weights.safetensors"
        save_file(load_file(weights), weights, metadata={SEAL_KEY: m["manifest_sha256"]})
    (path / "manifest.json").write_text(json.dumps(m))
    return path


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "nope")


def test_missing_weights(net, tmp_path):
    path = _dir(net, tmp_path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"weights\.safetensors is missing"):
        load(path)


def test_truncated_weights(net, tmp_path):
    path = _dir(net, tmp_path)
    w = path / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load(path)


def test_garbage_weights(net, tmp_path):
    path = _dir(net, tmp_path)
    (path / "weights.safetensors").write_bytes(b"\x80\x04pickle-ish garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load(path)


def test_tampered_weights(net, tmp_path):
    path = _dir(net, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    from safetensors.torch import load_file

    tensors = load_file(path / "weights.safetensors")
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, path / "weights.safetensors")
    with pytest.raises(CheckpointError, match="sha256"):
        load(path)
    assert manifest["weights_sha256"]  # the manifest itself was left untouched


def test_tampered_manifest_hash(net, tmp_path):
    path = _dir(net, tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["weights_sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="sha256"):
        load(path)


def test_corrupt_manifest(net, tmp_path):
    path = _dir(net, tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(path)


def test_wrong_schema_version(net, tmp_path):
    path = _edited(net, tmp_path, lambda m: m.update(schema_version=99))
    with pytest.raises(CheckpointError, match="schema version 99"):
        load(path)


def test_inconsistent_manifest(net, tmp_path):
    path = _edited(net, tmp_path, lambda m: m.pop("graph"), reseal=True)  # sealed, yet inconsistent
    with pytest.raises(CheckpointError, match="incomplete or inconsistent"):
        load(path)


def test_plain_safetensors_without_manifest(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, f)
    with pytest.raises(CheckpointError, match="without a TSC manifest"):
        load(f)


def test_not_a_checkpoint_dir(tmp_path):
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("T", 4), ("shift", 0.0), ("labels", list("edcba")), ("windows", None), ("input", {"channels": 1})],
)
def test_edited_behaviour_fields_are_refused(net, tmp_path, field, value):
    path = _edited(net, tmp_path, lambda m: m.update({field: value}))
    with pytest.raises(CheckpointError, match="were edited after it was written"):
        load(path)


def test_descriptive_fields_may_be_edited(net, tmp_path):
    def describe(m):
        m["provenance"]["note"] = "retrained on Tuesday"
        m["accuracy"] = {"tsc": 0.5}

    path = _edited(net, tmp_path, describe)
    assert load(path).provenance["note"] == "retrained on Tuesday"


def test_malformed_graph_fails_at_load_not_at_run_time(net, tmp_path):

    def stride_five(m):
        populations = m["graph"]["populations"]
        conv = next(op for p in populations for t in p["terms"] for op in t["ops"] if op["kind"] == "conv2d")
        conv["params"]["stride"] = [5, 5]

    path = _edited(net, tmp_path, stride_five, reseal=True)  # re-sealed: only the dry run can tell
    with pytest.raises(CheckpointError, match="the graph cannot run on its own input"):
        load(path)


@pytest.mark.parametrize("version", [1, 2])
def test_a_sealed_checkpoint_turned_into_an_older_schema_is_refused(net, tmp_path, version):
    def downgrade(m):
        m.update(schema_version=version, labels=list("edcba"))
        del m["manifest_sha256"]

    path = _edited(net, tmp_path, downgrade)
    with pytest.raises(CheckpointError, match="lost or changed the seal"):
        load(path)


def test_a_checkpoint_from_before_seals_loads_with_a_warning(net, tmp_path, caplog):
    """Schema 2 wrote neither the manifest's seal nor the weights file's: validated, loaded, warned about."""
    from safetensors.torch import load_file

    path = _edited(net, tmp_path, lambda m: (m.update(schema_version=2), m.pop("manifest_sha256")))
    save_file(load_file(path / "weights.safetensors"), path / "weights.safetensors")  # no metadata
    with caplog.at_level("WARNING"):
        assert load(path).labels == list("abcde")
    assert "unsealed checkpoint of schema 2" in caplog.text


def _written(net, tmp_path, edit):
    """A checkpoint whose tensors or manifest ``edit`` changed before it was written and sealed: what a
    writer with a bug (or a careful forger) produces; only validation at load can refuse it."""
    manifest, tensors = load_checkpoint(_dir(net, tmp_path))
    edit(manifest, tensors)
    save_checkpoint(tmp_path / "written", manifest, tensors)
    return tmp_path / "written"


def _set_lam(value):
    def edit(manifest, tensors):
        key = next(k for k in tensors if k.startswith("lam."))
        tensors[key] = value(tensors[key])

    return edit


def _infinite_weight(manifest, tensors):
    next(v for k, v in tensors.items() if k.endswith("weight")).fill_(float("inf"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set_lam(lambda lam: torch.ones(3)), r"threshold .* of shape \(3,\) fits no layer"),
        (_set_lam(lambda lam: torch.tensor(float("nan"))), "not a finite positive number"),
        (_set_lam(lambda lam: torch.tensor(0.0)), "not a finite positive number"),
        (_set_lam(lambda lam: -lam), "not a finite positive number"),
        (_infinite_weight, "not finite"),
        (lambda m, t: m.update(labels=[float("inf"), 2, None, "d", "e"]), "labels must be a list of strings"),
        (lambda m, t: m["input"].update(height=0), "positive channels, height and width"),
    ],
)
def test_values_no_converter_writes_are_refused_at_load(net, tmp_path, edit, message):
    path = _written(net, tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_a_deeply_nested_manifest_is_a_checkpoint_error(net, tmp_path):
    path = _dir(net, tmp_path)
    (path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="manifest"):
        load(path)


class UnusedBranch(torch.nn.Module):
    """A clip-floor trained network with a branch the output does not use (its layer is pruned)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = InputQuant(4)
        self.conv, self.spare = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
        self.act, self.unused = ClipFloor(4, 1.5), ClipFloor(4, 2.0)
        self.head = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.quant(x)
        self.unused(self.spare(x))
        return self.head(self.act(self.conv(x)).flatten(1))


def test_networks_the_converter_writes_load_back(tmp_path):
    """Pruned trained layers, whole-number labels, a network without neurons in float64."""
    x = images(4)
    pruned = convert(UnusedBranch().eval(), x, T="trained", labels=[0, 1, 2])
    assert pruned.labels == ["0", "1", "2"] and len(pruned.lams) == 1
    pruned.save(tmp_path / "pruned")
    assert load(tmp_path / "pruned").labels == ["0", "1", "2"]
    linear = convert(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval(), x, T=4)
    linear.to(torch.float64).save(tmp_path / "linear")
    assert load(tmp_path / "linear").dtype == torch.float64
