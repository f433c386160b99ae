"""Every YAML file a user writes (profiles, executor settings, seed configs) is read with duplicate keys refused:
the error names the file and the key, where plain `yaml.safe_load` would silently keep the second value."""
import shutil
import pytest, yaml
from sslmed.core import project_root
from sslmed.config import ConfigError
from sslmed.paper import load_profile
from sslmed.executors import executor_settings


def write_profile(root, profile, name, text):
    f = root / "nbs" / "experiments" / "profiles" / profile / f"{name}.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def test_profile_with_a_repeated_key_is_refused(tmp_path):
    nb = tmp_path / "nbs" / "experiments" / "main_results.ipynb"
    nb.parent.mkdir(parents=True)
    shutil.copy(project_root() / "nbs" / "experiments" / "main_results.ipynb", nb)
    f = write_profile(tmp_path, "smoke", "main_results", "seeds: [0]\nsteps: 10\nseeds: [0, 1, 2]\n")
    assert yaml.safe_load(f.read_text())["seeds"] == [0, 1, 2]  # what the plain loader would have used
    with pytest.raises(ConfigError, match=r"main_results\.yaml.*'seeds' is written twice \(lines 1 and 3\)"):
        load_profile("smoke", "main_results", root=tmp_path)


def test_executor_settings_with_a_repeated_key_are_refused(tmp_path):
    write_profile(tmp_path, "full", "executor", "partition: gpu\npartition: debug\n")
    with pytest.raises(ConfigError, match=r"executor\.yaml.*'partition' is written twice"):
        executor_settings("full", root=tmp_path)
