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
