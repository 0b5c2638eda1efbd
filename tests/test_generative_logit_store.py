"""kd_lessons.generative.logit_store: the memory arithmetic by hand, the on-disk store, its checks and its loss."""
import json

import pytest
import torch

from kd_lessons import cache
from kd_lessons.generative import logit_store as ls
from kd_lessons.generative.divergences import forward_kl, topk_kd_loss, topk_logprobs
from kd_lessons.generative.transformer import CharTransformer

V = 12


def test_full_vocabulary_bytes_by_hand():
    assert ls.full_bytes_per_position(49_152, "fp16") == 49_152 * 2 == 96 * 1024
    assert ls.full_bytes_per_position(49_152, "bf16") == 98_304
    assert ls.full_bytes_per_position(49_152, "fp32") == 196_608
    assert ls.full_bytes_per_position(80, "fp16") == 160
    assert ls.human_bytes(98_304) == "96.0 KiB" and ls.human_bytes(12) == "12 B"
    assert ls.corpus_bytes(98_304) == 98_304 * 10 ** 9  # 1B positions: about 89.4 TiB
    assert ls.human_bytes(ls.corpus_bytes(98_304)) == "89.4 TiB"


def test_topk_bytes_by_hand():
    assert ls.topk_bytes_per_position(20, 49_152) == 20 * (2 + 2) + 2        # fp16 values, uint16 ids, one rest
    assert ls.topk_bytes_per_position(20, 49_152, rest=False) == 80
    assert ls.topk_bytes_per_position(20, 49_152, "fp16", "int32") == 20 * (2 + 4) + 2
    assert ls.topk_bytes_per_position(5, 80) == 5 * (2 + 1) + 2              # the course's 80 characters: uint8 ids
    assert ls.topk_bytes_per_position(1, 80, "fp32") == 4 + 1 + 4
    assert [ls.index_dtype_for(n) for n in (80, 256, 257, 49_152, 65_536, 65_537)] == \
        ["uint8", "uint8", "uint16", "uint16", "uint16", "int32"]


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="49,152 tokens"):
        ls.topk_bytes_per_position(5, 49_152, "fp16", "uint8")
    with pytest.raises(ValueError, match="k=81"):
        ls.topk_bytes_per_position(81, 80)
    with pytest.raises(ValueError, match="value_dtype"):
        ls.StoreLayout(5, 80, "int8")


def test_memory_table_rows():
    rows = ls.memory_table(49_152, ks=(20,))
    assert [r["bytes_per_position"] for r in rows] == [196_608, 98_304, 98_304, 80, 82]
    assert rows[-1]["corpus_bytes"] == 82 * 10 ** 9 and "rest" in rows[-1]["layout"]


def test_encode_topk_keeps_the_rest_exactly():
    logits = torch.randn(3, 4, V) * 3
    ids, values, rest = ls.encode_topk(logits, 4)
    total = values.exp().sum(-1) + rest.exp()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert torch.equal(ids, logits.topk(4, -1).indices)
    assert bool((ls.encode_topk(logits, V)[2] == float("-inf")).all())   # k = V: nothing left


def _teacher(x):
    g = torch.Generator().manual_seed(int(x.sum()))
    return torch.randn(*x.shape, V, generator=g) * 3


@pytest.fixture
def windows():
    return torch.randint(0, V, (10, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("value_dtype, atol", [("fp32", 0.0), ("fp16", 0.01), ("bf16", 0.07)])
def test_store_round_trip_and_bytes(tmp_path, windows, value_dtype, atol):
    layout = ls.StoreLayout(5, V, value_dtype)
    manifest = ls.write_store(tmp_path, windows, _teacher, layout, shard_windows=4)
    assert manifest["shards_written"] == 3 and manifest["positions"] == 80
    store = ls.read_store(tmp_path)
    assert torch.equal(store["tokens"], windows)
    ids, values, rest = ls.encode_topk(torch.cat([_teacher(w[:, :-1]) for w in windows.split(4)]), 5)
    assert torch.equal(store["ids"], ids)
    assert torch.allclose(store["logprobs"], values, atol=atol) and torch.allclose(store["rest"], rest, atol=atol)
    size = ls.store_bytes(tmp_path)
    assert size["topk_bytes_per_position"] == size["arithmetic_bytes_per_position"] == layout.bytes_per_position
    assert size["tokens"] == 10 * 9  # uint8 ids
    assert ls.write_store(tmp_path, windows, _teacher, layout, shard_windows=4)["shards_written"] == 0


def test_a_module_or_precomputed_logits_write_the_same_store(tmp_path, windows):
    torch.manual_seed(0)
    model = CharTransformer(V, 8, 1, 2, 8).train()
    ls.write_store(tmp_path / "a", windows, model, ls.StoreLayout(3, V, "fp32"))
    assert model.training  # its mode is restored
    with torch.no_grad():
        logits = model.eval()(windows[:, :-1])
    ls.write_store(tmp_path / "b", windows, logits, ls.StoreLayout(3, V, "fp32"))
    a, b = ls.read_store(tmp_path / "a"), ls.read_store(tmp_path / "b")
    assert torch.equal(a["ids"], b["ids"]) and torch.allclose(a["logprobs"], b["logprobs"])


def test_a_corrupt_shard_is_named_and_only_it_is_rewritten(tmp_path, windows):
    layout = ls.StoreLayout(4, V)
    ls.write_store(tmp_path, windows, _teacher, layout, shard_windows=4)
    shard = tmp_path / "shard-00001.bin"
    data = bytearray(shard.read_bytes())
    data[7] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ls.CorruptShardError, match="shard-00001.bin does not match its recorded sha256") as error:
        ls.read_store(tmp_path)
    assert "rewrites only this shard" in str(error.value)
    assert len(ls.verify_store(tmp_path)) == 1
    kept = (tmp_path / "shard-00000.bin").stat().st_mtime_ns
    assert ls.write_store(tmp_path, windows, _teacher, layout, shard_windows=4)["shards_written"] == 1
    assert (tmp_path / "shard-00000.bin").stat().st_mtime_ns == kept and ls.verify_store(tmp_path) == []
    with open(shard, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ls.CorruptShardError, match="has 10 bytes but was written with"):
        ls.read_store(tmp_path)


def test_missing_manifest_and_foreign_shards(tmp_path, windows):
    with pytest.raises(FileNotFoundError, match="never finished"):
        ls.read_store(tmp_path)
    ls.write_store(tmp_path, windows, _teacher, ls.StoreLayout(4, V), meta={"teacher": "a"})
    manifest = json.loads((tmp_path / ls.MANIFEST).read_text())
    manifest["meta"] = {"teacher": "b"}
    (tmp_path / ls.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ls.CorruptShardError, match="another store"):
        ls.read_store(tmp_path)
    assert issubclass(ls.CorruptShardError, cache.CorruptFileError)


def test_stored_loss_matches_the_divergences():
    z, logits = torch.randn(3, 5, V, requires_grad=True), torch.randn(3, 5, V) * 3
    ids, values, rest = ls.encode_topk(logits, V)
    assert torch.allclose(ls.stored_kd_loss(z, ids, values, rest), forward_kl(z, logits), atol=1e-6)
    ls.stored_kd_loss(z, ids, values, rest).backward()
    assert torch.isfinite(z.grad).all()
    ids, values, rest = ls.encode_topk(logits, 4)
    idx, lp = topk_logprobs(logits, 4)
    assert torch.allclose(ls.stored_kd_loss(z, ids, values, rest), topk_kd_loss(z, idx, lp, renormalize=False),
                          atol=1e-5)
    assert torch.allclose(ls.stored_kd_loss(z, ids, values, renormalize=True), topk_kd_loss(z, idx, lp), atol=1e-6)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = True
    assert torch.allclose(ls.stored_kd_loss(z, ids, values, rest, mask=mask),
                          topk_kd_loss(z, idx, lp, renormalize=False, mask=mask), atol=1e-5)
    with pytest.raises(ValueError, match="rest bucket needs"):
        ls.stored_kd_loss(z, ids, values)
