"""What a checkpoint carries so that --load can trust it, and what --load does when it cannot.

* checksums: every checkpoint holds ``checksums.json`` (size + SHA-256 per file), written before the folder is
  renamed into place; --load verifies it first: a changed, truncated or missing file is one error line naming the
  checkpoint and the file, exit 2, nothing written; a checkpoint without the manifest loads with a note;
* --ckpt-fallback-to-verified: a damaged newest checkpoint (checksum, missing .metadata, unreadable common.pt)
  gives way to the newest older one that verifies, with a warning line;
* fsync: files, the checkpoint folder, the save folder after the rename and the tracker (write, sync, rename) are
  synced before the tracker names the checkpoint;
* --save-keep-last N: only the N newest checkpoints stay; the one the tracker names and folders being written stay.
"""

import hashlib
import json
import os
import shutil

import pytest

from megatron.training import checkpoint_checksums, checkpoint_retention, checkpointing
from megatron.training.engine_compat import CHECKPOINT_REQUIRED_FILES
from tests.support import run_python
from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, losses

BASE = TINY_GPT + NO_DROPOUT + ["--train-iters", "6"]
TRACKER = checkpointing.TRACKER_FILE


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run that saved iterations 2, 4 and 6 (and its stdout)."""
    ck = tmp_path_factory.mktemp("base") / "ck"
    proc = run_python(BASE + ["--save", str(ck), "--save-interval", "2"], timeout=300)
    assert_ok(proc)
    return ck, proc.stdout


@pytest.fixture
def ck(saved, tmp_path):
    """A private copy of the saved run's checkpoint folder."""
    copy = tmp_path / "ck"
    shutil.copytree(saved[0], copy)
    return copy


def _iter(ck, it):
    return ck / f"iter_{it:07d}"


def _flip_byte(path, offset=1000):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(proc, prefix):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    return lines[0]


def test_every_checkpoint_lists_each_file_with_size_and_sha256(saved):
    ck, _ = saved
    assert checkpointing.published_iterations(str(ck)) == [2, 4, 6]
    for it in (2, 4, 6):
        folder = _iter(ck, it)
        manifest = json.loads((folder / "checksums.json").read_text())
        assert manifest["algorithm"] == "sha256"
        on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                         if p.is_file() and p.name != "checksums.json")
        # the files the installed megatron-core cannot load without (0.19 keeps the common state inside torch_dist)
        assert sorted(manifest["files"]) == on_disk and set(CHECKPOINT_REQUIRED_FILES) <= set(on_disk)
        for rel, entry in manifest["files"].items():
            data = (folder / rel).read_bytes()
            assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
        assert checkpoint_checksums.verify(str(folder)) is None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load of the garbage common.pt
@pytest.mark.parametrize("damage, needle", [
    ("flip", "__0_0.distcp: sha256 differs from checksums.json"),
    ("truncate", "__0_0.distcp: 100 bytes but checksums.json lists"),
    ("delete", "__0_0.distcp: missing"),
    ("delete-metadata", ".metadata: missing"),
    ("garbage-manifest", "checksums.json: unreadable"),
    ("manifest-without-sizes", "checksums.json: unreadable (the entry of __0_0.distcp lacks its size"),
    pytest.param("garbage-common-unlisted", "common.pt: unreadable", marks=pytest.mark.skipif(
        "common.pt" not in CHECKPOINT_REQUIRED_FILES, reason="this megatron-core writes no common.pt")),
    ("metadata-missing-unlisted", ".metadata: missing"),
])
def test_damage_is_named_by_file(ck, damage, needle):
    folder = _iter(ck, 6)
    target = folder / "__0_0.distcp"
    if damage == "flip":
        _flip_byte(target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "delete":
        target.unlink()
    elif damage == "delete-metadata":
        (folder / ".metadata").unlink()
    elif damage == "garbage-manifest":
        (folder / "checksums.json").write_text("{not json")
    elif damage == "manifest-without-sizes":
        manifest = json.loads((folder / "checksums.json").read_text())
        manifest["files"]["__0_0.distcp"] = "ca86"
        (folder / "checksums.json").write_text(json.dumps(manifest))
    else:  # a checkpoint without checksums (older ones): the files the format needs are checked instead
        (folder / "checksums.json").unlink()
        if damage == "garbage-common-unlisted":
            (folder / "common.pt").write_bytes(b"\x80\x04garbage")
        else:
            (folder / ".metadata").unlink()
    with pytest.raises(checkpointing.DamagedCheckpoint) as err:
        checkpointing.verified_checkpoint(str(ck), 6)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message and needle in message, message
    assert "--ckpt-fallback-to-verified" in message
    # the fallback takes the newest older checkpoint that verifies
    path, common = checkpointing.verified_checkpoint(str(ck), 6, fallback=True)
    assert path == str(_iter(ck, 4)) and common["iteration"] == 4


def test_fallback_skips_damaged_and_unverifiable_older_checkpoints(ck, capsys):
    _flip_byte(sorted(_iter(ck, 6).glob("*.distcp"))[-1])  # 0.16 writes two data files per rank, 0.19 one
    (_iter(ck, 4) / "checksums.json").unlink()  # no checksums: cannot be verified, so no fallback target
    path, _common = checkpointing.verified_checkpoint(str(ck), 6, fallback=True)
    assert path == str(_iter(ck, 2))
    err = capsys.readouterr().err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "iter_0000006" in warning[0] and "iter_0000002" in warning[0], err
    _flip_byte(_iter(ck, 2) / "__0_0.distcp")
    with pytest.raises(checkpointing.DamagedCheckpoint) as err:
        checkpointing.verified_checkpoint(str(ck), 6, fallback=True)
    assert "no older checkpoint verifies" in str(err.value)
    assert "iter_0000004: no checksums.json" in str(err.value) and "iter_0000002: __0_0.distcp" in str(err.value)


def test_a_tracker_that_is_not_a_number_is_one_error(ck):
    (ck / TRACKER).write_text("6x")
    with pytest.raises(checkpointing.DamagedCheckpoint, match="is corrupt .expected an iteration number"):
        checkpointing.read_tracker(str(ck))


def test_damaged_checkpoint_stops_load_with_one_line_and_writes_nothing(ck):
    _flip_byte(_iter(ck, 6) / "__0_0.distcp")
    before = _snapshot(ck)
    proc = run_python(BASE + ["--load", str(ck), "--save", str(ck), "--save-interval", "2"], timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = _one_line(proc, "error:")
    assert f"checkpoint {_iter(ck, 6)} is damaged: __0_0.distcp: sha256 differs" in line, line
    assert "Traceback" not in proc.stderr
    assert _snapshot(ck) == before


def test_fallback_resumes_from_the_newest_verified_checkpoint(ck, saved):
    _flip_byte(_iter(ck, 6) / "__0_0.distcp")
    proc = run_python(BASE + ["--load", str(ck), "--save", str(ck), "--save-interval", "2",
                              "--ckpt-fallback-to-verified"], timeout=300)
    assert_ok(proc)
    line = _one_line(proc, "warning:")
    assert str(_iter(ck, 6)) in line and "__0_0.distcp" in line and str(_iter(ck, 4)) in line, line
    assert "at iteration 4" in proc.stdout
    # resumed bitwise: the losses of iterations 5 and 6 are the uninterrupted run's
    resumed, straight = losses(proc.stdout), losses(saved[1])
    assert sorted(resumed) == [5, 6] and all(resumed[i] == straight[i] for i in (5, 6)), (resumed, straight)
    assert (ck / TRACKER).read_text() == "6" and checkpoint_checksums.verify(str(_iter(ck, 6))) is None


def test_checkpoint_without_checksums_loads_with_a_note(ck):
    (_iter(ck, 6) / "checksums.json").unlink()
    proc = run_python(BASE + ["--load", str(ck)], timeout=300)
    assert_ok(proc)
    line = _one_line(proc, "note: --load")
    assert str(_iter(ck, 6)) in line and "no checksums.json" in line and "unverified" in line, line
    assert "at iteration 6" in proc.stdout


def test_save_syncs_files_and_folders_before_the_tracker_names_them(tmp_path, monkeypatch):
    """The order of fsync and rename calls of one save, recorded on a stand-in checkpoint folder."""
    save = tmp_path.resolve() / "ck"  # /proc/self/fd names resolved paths
    tmp = save / "iter_0000003.tmp"
    (tmp / "sub").mkdir(parents=True)
    for rel in ("__0_0.distcp", ".metadata", "common.pt", "sub/extra.bin"):
        (tmp / rel).write_bytes(os.urandom(4096))
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    final = save / "iter_0000003"
    checkpoint_checksums.seal(str(tmp))
    checkpointing._publish(str(tmp), str(final), str(save), 3)
    assert (save / TRACKER).read_text() == "3" and not tmp.exists()

    def first(event):
        return events.index(event)

    moved = first(("replace", str(tmp), str(final)))
    tracked = first(("replace", str(save / TRACKER) + ".tmp", str(save / TRACKER)))
    synced = [i for i, e in enumerate(events) if e[0] == "fsync"]

    def synced_before(path, limit, after=-1):
        return any(after < i < limit and events[i][1] == str(path) for i in synced)

    for rel in ("__0_0.distcp", ".metadata", "common.pt", "sub/extra.bin", "checksums.json"):
        assert synced_before(tmp / rel, moved), rel
    assert synced_before(tmp / "sub", moved) and synced_before(tmp, moved)
    assert synced_before(save, tracked, after=moved)  # the rename is on disk before the tracker moves
    assert synced_before(save / (TRACKER + ".tmp"), tracked)
    assert any(i > tracked and events[i][1] == str(save) for i in synced)
    assert checkpoint_checksums.verify(str(final)) is None


def test_keep_last_policy():
    assert checkpoint_retention.to_remove([2, 4, 6, 8], 8, 2) == [2, 4]
    assert checkpoint_retention.to_remove([2, 4, 6, 8], 8, 1) == [2, 4, 6]
    assert checkpoint_retention.to_remove([2, 4], 4, 5) == []
    # the tracker's checkpoint is never removed, nor ones newer than it (a run that fell back from them)
    assert checkpoint_retention.to_remove([2, 4, 6, 8, 10], 6, 1) == [2, 4]
    with pytest.raises(ValueError):
        checkpoint_retention.to_remove([2], 2, 0)


def test_keep_last_keeps_the_newest_and_folders_being_written(tmp_path):
    ck = tmp_path / "ck"
    (ck / "iter_0000007.tmp").mkdir(parents=True)  # a folder being written: not a checkpoint yet, never touched
    (ck / "iter_0000009").mkdir()  # newer than the tracker (left by a run this one fell back from): kept
    proc = run_python(BASE + ["--save", str(ck), "--save-interval", "2", "--save-keep-last", "2"], timeout=300)
    assert_ok(proc)
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith("iter_")) == [
        "iter_0000004", "iter_0000006", "iter_0000007.tmp", "iter_0000009"]
    assert (ck / TRACKER).read_text() == "6"
    assert proc.stdout.count(f"> removed {_iter(ck, 2)} (--save-keep-last 2)") == 1
    assert checkpoint_checksums.verify(str(_iter(ck, 4))) is None


def test_upstream_verify_integrity_is_accepted_with_a_note(capsys):
    from megatron.training.training import parse_args

    parse_args(argv=BASE[1:] + ["--verify-integrity"])
    err = capsys.readouterr().err
    assert "note: --verify-integrity" in err and "checksums.json" in err


@pytest.mark.parametrize("argv, needle", [
    (["--ckpt-fallback-to-verified"], "--ckpt-fallback-to-verified needs --load"),
    (["--save-keep-last", "2"], "--save-keep-last needs --save"),
    (["--save", "CK", "--save-keep-last", "0"], "--save-keep-last must be >= 1"),
    (["--save", "CK", "--load", "CK", "--save-keep-last", "1", "--ckpt-fallback-to-verified"],
     "never one to fall back to"),
])
def test_conflicting_checkpoint_flags_are_refused(argv, needle, tmp_path):
    from megatron.training.training import parse_args
    from megatron.training.validate import ConfigError, validate_args

    args = parse_args(argv=BASE[1:] + [str(tmp_path / "ck") if a == "CK" else a for a in argv])
    with pytest.raises(ConfigError) as err:
        validate_args(args, world_size=1)
    assert needle in str(err.value) and "\n" not in str(err.value)
