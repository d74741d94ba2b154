"""videohpm.hardware: which ISA levels the oneDNN cap in the environment leaves."""
import pytest

from videohpm import hardware


@pytest.mark.parametrize("cap, avx512, bf16, amx", [
    (None, True, True, True), ("ALL", True, True, True), ("AVX2", False, False, False), ("SSE41", False, False, False),
    ("AVX512_CORE", True, False, False), ("AVX512_CORE_VNNI", True, False, False),
    ("AVX512_CORE_BF16", True, True, False), ("AVX512_CORE_AMX", True, True, True), ("AVX10_1_512", True, True, False),
    ("bogus", False, False, False),
])
def test_onednn_isa_cap_levels(monkeypatch, cap, avx512, bf16, amx):
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert [hardware.onednn_cap_allows(level) for level in ("avx512", "bf16", "amx")] == [avx512, bf16, amx]
