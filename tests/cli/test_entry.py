"""Every command's start (memorization/cli/entry.py): what Hydra would print in several lines
is one line before it starts."""

from __future__ import annotations

from memorization.cli.entry import precheck


def test_an_override_hydra_cannot_parse_is_one_line_with_the_fix(tmp_path):
    folder = f"{tmp_path}/ünïcødé_✓_目录"
    err, cfg = precheck(["trainer.max_epochs=1", f"hydra.run.dir={folder}"])
    assert cfg is None
    assert err == (f"Hydra cannot parse the override hydra.run.dir={folder}: quote a value "
                   "with spaces or characters outside ASCII, e.g. 'key=\"value\"'")
    err, cfg = precheck(["trainer.max_epochs=1", f'hydra.run.dir="{folder}"'])
    assert err is None and str(cfg.hydra.run.dir) == folder


def test_a_nearly_full_disk_is_one_line_before_hydra_writes(tmp_path, monkeypatch):
    from memorization.cli import entry

    monkeypatch.setattr(entry, "_free_bytes", lambda path: 12 * 1024)
    err, _ = precheck(["trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"])
    assert err == (f"only 12 KiB free on the disk of {tmp_path / 'run'}: free space there (at "
                   "least 16 MiB) or choose another folder with hydra.run.dir=...")
    assert not (tmp_path / "run").exists()
