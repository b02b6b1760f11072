"""tools/bench_data_scale.py at 10 k and 20 k cuts: the KD data path's memory does not grow with the pool size
(the pool and the teachers' outputs stream from Shar shards; nothing is joined or held per cut), and the first batch
needs no pass over the pool (the bucket boundaries come from pool.json's duration sample). No timing asserts."""


from conftest import load_script


def test_kd_data_path_memory_does_not_grow_with_the_pool(tmp_path):
    bench = load_script("tools/bench_data_scale.py")
    rows = bench.run_sizes([10000, 20000], tmp_path, shard_size=1000, real_shards=2, buffer_size=2000)
    assert [r["cuts"] for r in rows] == [10000, 20000]
    for r in rows:  # the first batch is real: every teacher field collated at the paper's shapes
        assert r["shapes"]["whisper_embedding"][2] == 1280 and r["shapes"]["beats_probabilities"][1] == 527
        assert r["shapes"]["ecapa_embedding"][1] == 192 and r["batch_cuts"] > 1
    assert abs(rows[1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]) < 20, rows
    # only the sampler's buffer (2000) and the batch are read; estimating the buckets would read 10,000 cuts first
    assert all(r["cuts_read"] <= 2000 + r["batch_cuts"] + 1 for r in rows), rows
