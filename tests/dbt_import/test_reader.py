"""Reading a dbt project folder: only the project's own files, links out of it refused."""

from __future__ import annotations

from pathlib import Path

from fabric.dbt_import.reader import read_project_dir


def test_only_the_projects_own_files_are_read(tmp_path: Path):
    secret = tmp_path / "elsewhere"
    (secret / "models").mkdir(parents=True)
    (secret / "passwords.sql").write_text("select 'hunter2'\n")
    (secret / "models" / "theirs.sql").write_text("select 2\n")
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: p\n")
    (root / "models" / "a.sql").write_text("select 1\n")
    (root / "models" / "same.sql").symlink_to(root / "models" / "a.sql")  # inside: read
    (root / "models" / "leak.sql").symlink_to(secret / "passwords.sql")
    (root / "models" / "linked").symlink_to(secret / "models", target_is_directory=True)
    (root / "target").mkdir()
    (root / "target" / "compiled.sql").write_text("select 3\n")
    (root / "dbt_packages" / "x").mkdir(parents=True)
    (root / "dbt_packages" / "x" / "m.sql").write_text("select 4\n")
    (root / "seeds").mkdir()
    (root / "seeds" / "blob.csv").write_bytes(b"\xff\xfe\x00binary")

    files, refused = read_project_dir(root)

    assert sorted(files) == ["dbt_project.yml", "models/a.sql", "models/same.sql"]
    assert all("hunter2" not in text for text in files.values())
    reasons = {u.path: u.why for u in refused}
    assert "outside the project" in reasons["models/leak.sql"]
    assert "not followed" in reasons["models/linked"]
    assert reasons["seeds/blob.csv"] == "not UTF-8 text"
