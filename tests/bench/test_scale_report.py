"""bench.scale's report: goals compare runs of one near_dedup setting, and near_dedup's cost is the
chain's tokens/s per core on over off (no cluster here: run records as the bench writes them)."""
from __future__ import annotations

from bench import scale


def run(gb: float, nd: bool, rate: int, nd_seconds: float = 0.0) -> dict:
    stages = {s: {"seconds": 10.0, "tasks": 4 * gb * 10, "objects": 8 * gb * 10, "driver_peak_rss_mb": 300,
                  "worker_peak_rss_mb": 500, "worker_peak_private_mb": 400, "worker_peak_store_pages_mb": 50}
              for s in scale.chain_stages(nd)}
    if nd:
        stages["near_dedup"]["seconds"] = nd_seconds
    return {"gb": gb, "nodes": 4, "near_dedup": nd, "corpus_bytes": int(gb * 1e9), "tokens_per_s_per_core": rate,
            "seconds": sum(row["seconds"] for row in stages.values()), "stages": stages}


def test_chain_stages_with_and_without_near_dedup():
    assert scale.chain_stages(True) == scale.STAGES
    assert scale.chain_stages(False) == ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs")


def test_goals_compare_runs_of_one_setting_only():
    runs = [run(0.2, True, 100, 5.0), run(2.0, True, 95, 5.0), run(0.2, False, 110), run(2.0, False, 50)]
    checks = {g["near_dedup"]: g for g in scale.goals(runs)}
    assert set(checks) == {True, False}
    assert checks[True]["throughput_ratio"] == 0.95 and checks[True]["met"]["throughput"]
    assert checks[False]["throughput_ratio"] == 0.45 and not checks[False]["met"]["throughput"]
    assert "near_dedup.tasks" in checks[True]["growth"] and "near_dedup.tasks" not in checks[False]["growth"]


def test_near_dedup_cost_is_on_over_off_of_the_runs_means():
    runs = [run(0.2, True, 80, 6.0), run(0.2, False, 100), run(0.2, True, 90, 6.0), run(0.2, False, 100),
            run(2.0, True, 50, 1.0)]
    (cost,) = scale.near_dedup_cost(runs)
    assert (cost["gb"], cost["runs_on"], cost["runs_off"]) == (0.2, 2, 2)
    assert cost["ratio"] == 0.85 and cost["drop"] == 0.15 and cost["met"]
    assert cost["stage_share"] == round(6.0 / 66.0, 3)
    assert not scale.near_dedup_cost([run(0.2, True, 84), run(0.2, False, 100)])[0]["met"]
