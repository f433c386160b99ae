"""`sslmed paper --executor slurm` against the real one-node SLURM of .ci/slurm-up: a notebook group's full dry run, every
run a job; a rerun that resubmits only the missing run; a job that fails naming its job id and log. The tests share one
throwaway checkout and run in file order (each later one starts from what the earlier left)."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import pytest
import yaml
from conftest import ROOT
from test_full_dryrun import dry_run_copy

pytestmark = pytest.mark.filterwarnings("ignore")
GROUP = {"main_results": {"domains": ["ecg"], "methods": ["lejepa", "random"]}}   # 2 runs: the smallest group of the full profile
PROFILE = "full-dryrun"


def paper(root, *flags, timeout=1200):
    "`sslmed paper --profile full --dry-run --executor slurm --only main_results` in `root`; the process and its wall time."
    exe = Path(sys.executable).parent / "sslmed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLMED_DATA_")}
    t0 = time.time()
    r = subprocess.run([str(exe), "paper", "--profile", "full", "--dry-run", "--executor", "slurm", "--only", *GROUP, *flags],
                       cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    print(f"sslmed paper --executor slurm: {time.time() - t0:.0f} s\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def submissions(root) -> list[dict]:
    f = root / "runs/slurm" / PROFILE / "submitted.jsonl"
    return [json.loads(l) for l in f.read_text().splitlines()] if f.is_file() else []


def run_dirs(root) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "runs/train" / PROFILE).glob("*/*") if p.is_dir()}


@pytest.fixture(scope="module")
def slurm_root(slurm, tmp_path_factory):
    "A throwaway checkout narrowed to one notebook group, and its first dry run through SLURM."
    root = tmp_path_factory.mktemp("slurm_paper")
    for d in ("nbs", "data_cards", "benchmarks/results"): shutil.copytree(ROOT / d, root / d)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    dry_run_copy(root, GROUP)
    return root, paper(root)


def test_slurm_dry_run_notebook_group(slurm_root):
    "The group's dry run: every run a SLURM job (logs linked into its run folder), the runs the plan counted, the artifacts written."
    root, r = slurm_root
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    subs = submissions(root)
    train = [s for s in subs if s["kind"] == "train"]
    assert len(train) == 1 and len(train[0]["jobs"]) == 2 and train[0]["reused"] == 0, subs   # one array of the 2 runs
    assert any(s["kind"] == "eval" and len(s["jobs"]) == 2 for s in subs), subs                 # the 2 grid cells: one array
    for job, run in zip(train[0]["jobs"], train[0]["runs"]):
        log = Path(run) / f"slurm-{job}.out"
        assert log.is_symlink() and log.resolve().is_file(), log
        assert (Path(run) / "backbone.pt").is_file(), run
    from sslmed.executors import distinct_runs
    from sslmed.paper import experiment_params
    planned = set(distinct_runs(PROFILE, experiment_params(PROFILE, root, only=list(GROUP)), root).run)
    assert planned == run_dirs(root), (planned, run_dirs(root))               # the plan names exactly the folders trained
    m = json.loads((root / "figures" / PROFILE / "manifest.json").read_text())
    assert {e["notebook"] for e in m.values()} == {"main_results"} and all(e["profile"] == PROFILE for e in m.values())


def test_slurm_rerun_resubmits_only_missing_runs(slurm_root):
    "A run deleted after the first pass (an outage lost it) is the only pretraining job of the rerun; the other is reused."
    root, _ = slurm_root
    before = len(submissions(root))
    lost = sorted(run_dirs(root))[0]
    shutil.rmtree(root / lost)
    r = paper(root)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    train = [s for s in submissions(root)[before:] if s["kind"] == "train"]
    assert len(train) == 1 and train[0]["reused"] == 1 and [Path(p).relative_to(root).as_posix() for p in train[0]["runs"]] == [lost], train
    assert (root / lost / "backbone.pt").is_file()


def test_slurm_submit_driver_runs_the_paper_as_a_job(slurm_root):
    "`--submit-driver` returns at once with a job id; that CPU job runs the paper, which finds both runs finished and reuses them."
    root, _ = slurm_root
    before, mtime = len(submissions(root)), (root / "figures" / PROFILE / "manifest.json").stat().st_mtime_ns
    r = paper(root, "--submit-driver", timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    job = r.stdout.split("submitted the driver as SLURM job ")[1].split(";")[0]
    for _ in range(900):   # the driver waits on its own jobs: at most 15 minutes
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(): break
        time.sleep(1)
    new = submissions(root)[before:]
    assert [s["kind"] for s in new][0] == "driver" and new[0]["jobs"] == [job], new
    train = [s for s in new if s["kind"] == "train"]
    assert all(s["jobs"] == [] or s.get("reused") == 2 for s in train), train      # nothing retrained: both runs were finished
    log = next((root / "runs/slurm" / PROFILE / "driver" / job).glob("*_log.out"))
    assert "main_results" in log.read_text(), log.read_text()[-3000:]               # the paper ran inside the job
    assert (root / "figures" / PROFILE / "manifest.json").stat().st_mtime_ns >= mtime


def test_slurm_failed_job_names_job_id_and_log(slurm_root):
    "A corrupt recipe (a method argument LeJEPA does not take) fails its job; the notebook and the summary name the job and its log."
    root, _ = slurm_root
    f = root / "recipes/full/ecg.yaml"
    rec = yaml.safe_load(f.read_text())
    rec["methods"]["lejepa"]["method_kw"]["no_such_argument"] = 1
    f.write_text(yaml.safe_dump(rec, sort_keys=False))
    before = len(submissions(root))
    r = paper(root)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-4000:]
    train = [s for s in submissions(root)[before:] if s["kind"] == "train"]
    assert len(train) == 1 and len(train[0]["jobs"]) == 1, train              # only the changed run; random is reused
    job, run = train[0]["jobs"][0], Path(train[0]["runs"][0])
    log = run / f"slurm-{job}.err"
    assert f"SLURM job {job} failed, log {log}" in r.stdout, r.stdout          # the paper's summary line
    nb = (root / "runs" / PROFILE / "main_results.ipynb").read_text()
    assert f"SLURM job {job} failed, log {log}" in nb and "JobFailed" in nb
    assert "no_such_argument" in log.read_text()                               # the log holds the job's own error
