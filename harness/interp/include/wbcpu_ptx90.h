// wbcpu_ptx90.h — Hopper (sm_90a) PTX on the CPU: the entry points the asm handlers of harness/interp/asm_sm90.py
// call for mbarrier, cp.async.bulk.tensor (TMA), wgmma, setmaxnreg and the proxy fences. The models themselves live in
// runtime/wbcpu_ptx90.cpp (compiled with the runtime: they read the scheduler, the racecheck shadow and the
// happens-before clocks). Shared-memory operands are what the PTX sees: 32-bit shared-window offsets
// (__cvta_generic_to_shared), as in `"r"(saddr(bar))`.
//
// Semantics are the PTX ISA's (sections "mbarrier", "cp.async.bulk.tensor", "Asynchronous Warpgroup Level Matrix
// Multiply-Accumulate", "setmaxnreg", "Memory consistency model: proxies"); harness/interp/README.md lists what is
// modelled and what is not, and tests/test_ptx90.py checks each instruction on values worked out by hand.
#pragma once

namespace wb {
namespace ptx90 {

// ---- mbarrier (a 64-bit object in shared memory; its state is the model's, keyed by address)
WB_HIDDEN void mbar_init(uint32_t bar, uint32_t count, Loc loc);
WB_HIDDEN uint64_t mbar_arrive(uint32_t bar, uint32_t count, int release, Loc loc);  // returns a state token
WB_HIDDEN uint64_t mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes, Loc loc);
WB_HIDDEN void mbar_expect_tx(uint32_t bar, uint32_t bytes, Loc loc);
WB_HIDDEN void mbar_complete_tx(uint32_t bar, uint32_t bytes, Loc loc);
WB_HIDDEN bool mbar_try_wait_parity(uint32_t bar, uint32_t parity, Loc loc);  // one probe (acquires on success)
WB_HIDDEN void mbar_wait_parity(uint32_t bar, uint32_t parity, Loc loc);      // the try_wait loop: blocks
WB_HIDDEN void fence_mbarrier_init(Loc loc);
WB_HIDDEN void fence_proxy_async(Loc loc);

// ---- TMA: box of the tensor map at coords[0..rank) into shared memory, complete_tx on the mbarrier
WB_HIDDEN void tma_load(uint32_t dst, uint64_t map, uint32_t bar, int rank, const int* coords, Loc loc);

// ---- wgmma: every call is a warpgroup collective (.sync.aligned: all 128 threads, same operands)
WB_HIDDEN void wgmma_fence(Loc loc);
WB_HIDDEN void wgmma_commit(Loc loc);
WB_HIDDEN void wgmma_wait(int keep, Loc loc);
// shape/types as in the opcode ("m64n128k16.f32.bf16.bf16"); d: the nd accumulator registers of this thread; a: the
// na A-fragment registers (register-A form) or nullptr with da a descriptor; scale_d: the predicate's value
WB_HIDDEN void wgmma(const char* spec, float* const* d, int nd, const uint32_t* a, int na, uint64_t da, uint64_t db,
                     int scale_d, int scale_a, int scale_b, int tnsp_a, int tnsp_b, Loc loc);
WB_HIDDEN void setmaxnreg(int inc, int regs, Loc loc);

// ---- pure functions of the model (unit-tested on hand-worked values, usable from host code)
struct Desc {
  uint32_t start, lbo, sbo;  // bytes (the fields hold them >> 4)
  uint32_t base_offset;      // bits 49-51
  uint32_t layout;           // bits 62-63: 0 interleave (no swizzle), 1 128B, 2 64B, 3 32B
};
WB_HIDDEN Desc desc_decode(uint64_t desc);
// shared-window byte address of element (mn, k) of a wgmma operand: kmajor 1 for K-major (no transpose), es the
// element size; the canonical layouts of the PTX ISA ("Shared Memory Matrix Layout"), swizzle applied
WB_HIDDEN uint32_t desc_address(uint64_t desc, int kmajor, int es, int mn, int k);
// the swizzle of a shared address: mode as CUtensorMapSwizzle (0 none, 1 32B, 2 64B, 3 128B)
WB_HIDDEN uint32_t swizzle(uint32_t addr, int mode);
// one element of the m64nNk accumulator: the (row, col) that thread t (0..127) register i holds
WB_HIDDEN void acc_coord(int t, int i, int* row, int* col);
// fp8 (e4m3 = 0, e5m2 = 1) byte -> float
WB_HIDDEN float fp8_value(unsigned char b, int e5m2);
// QGMMA's limited-precision accumulation of one k32 instruction for one output: c + sum(a[i] * b[i]), i < n
WB_HIDDEN float qgmma_accumulate(float c, const float* a, const float* b, int n);

}  // namespace ptx90
}  // namespace wb
