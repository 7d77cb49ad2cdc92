// wbcpu_ptx90.cpp — CPU models of the Hopper (sm_90a) PTX the workbench's kernels use: mbarrier, cp.async.bulk.tensor
// (TMA), wgmma.mma_async with its fence/commit/wait, setmaxnreg, fence.proxy.async. Included at the end of
// wbcpu_rt.cpp (one translation unit, not instrumented): the models use the scheduler (wait_until, rendezvous), the
// racecheck shadow and the happens-before clocks (hb_*). Entry points: include/wbcpu_ptx90.h; the asm handlers that
// call them: harness/interp/asm_sm90.py. Sources of the semantics, per section below: the PTX ISA (9.0) and, for the
// canonical shared-memory layouts and the swizzle bits, CUTLASS's cute/atom/mma_traits_sm90_gmma.hpp and
// cute/atom/copy_traits_sm90_tma_swizzle.hpp (which NVIDIA's own kernels are built on).
//
// Ordering model (what racecheck checks, on top of barriers and warp collectives):
//  * mbarrier: an arrive releases (the arriving thread's clocks join the phase); try_wait.parity that observes a
//    completed phase acquires it. A TMA copy is an agent (one per mbarrier) whose bytes are stamped with the phase they
//    complete: a thread may read them only after acquiring that phase — or through something ordered after a thread
//    that did (a __syncthreads joins every thread's clocks). Reading them earlier, or while they are in flight, is a
//    race; so is a TMA write onto bytes whose readers are not ordered before the issuing thread (a slot refilled
//    before every consumer released it).
//  * wgmma: the tensor core of a warpgroup is an agent. At issue it knows what the 128 issuing threads know; it reads
//    its shared-memory operands (a byte that changed before the wait that retires them is a race) and stamps the
//    reads with its clock; a warp's wgmma.wait_group delivers that warp's accumulators (until then the registers hold
//    NaN) and makes its threads know the stamp. A wgmma completes as one warpgroup operation, so one warp's wait
//    orders all of its reads: CUTLASS's pipelines release a stage with one thread per warpgroup after
//    warpgroup_wait, which per-warp completion would make a race. A shared byte written by ordinary stores must be
//    followed by fence.proxy.async of its writer before a wgmma reads it.
namespace wb {
namespace {

// agent ids (wbcpu_rt.cpp, happens-before): [g_hb_w - HB_AGENTS, +8) the warpgroups' tensor cores, then one TMA unit
// per mbarrier
inline unsigned agent_base() { return g_hb_w - HB_AGENTS; }
inline unsigned wg_agent(unsigned wg) { return agent_base() + wg; }

unsigned cur_tid(const char* what, Loc loc) {
  if (!in_fiber()) raise_fault(FAULT_SYNCCHECK, fmt("%s outside a kernel (%s)", what, loc_str(loc).c_str()));
  return g_cur->ltid;
}
char* smem_ptr(uint32_t off) { return g_win + off; }

// ---- memcheck of a model access to shared memory (no shadow)
void shared_bounds(uintptr_t a, size_t n, int kind, uint64_t here) {
  const uintptr_t dyn = (uintptr_t)g_win;
  if (a - dyn >= WIN_SIZE) bad_access("out-of-bounds shared", a, n, kind, here, true);
  if (a < dyn + DYN_MAX) {
    if (a + n > dyn + g_dyn_size) bad_access("out-of-bounds shared", a, n, kind, here, true);
  } else {
    const Slot* s = find_slot(a);
    if (!s || a < s->lo || a + n > s->hi) bad_access("out-of-bounds shared", a, n, kind, here, true);
  }
  if (a < g_touch_lo) g_touch_lo = a;
  if (a + n > g_touch_hi) g_touch_hi = a + n;
}

std::vector<uint32_t> g_fence_clk;  // per thread: its clock at its last fence.proxy.async

// ================================================================================================ mbarrier
// PTX ISA "mbarrier": an opaque 64-bit object in shared memory with a phase, a pending arrival count (reset to the
// init count when a phase completes) and a transaction count (expect-tx adds, complete-tx subtracts; range +-(2^20-1));
// the current phase completes when both are zero. try_wait.parity(p) is true once the phase with parity p has
// completed, i.e. while the current phase's parity differs from p (on a fresh barrier, parity 1 is "complete").
struct MBar {
  uintptr_t addr = 0;
  unsigned count = 0, pending = 0, phase = 0;  // phase: phases completed so far
  long long tx = 0;
  unsigned init_tid = 0, agent = 0;
  uint32_t init_epoch = 0, init_clk = 0;
  std::vector<uint32_t> acc, last;  // clocks released into the current phase / published by the last completed one
  Loc init_loc{nullptr, 0};
};
std::unordered_map<uintptr_t, MBar> g_mbars;
unsigned g_mbar_agents = 0;

std::string mbar_name(uintptr_t a) { return shared_name(a); }

MBar& mbar_get(uint32_t off, const char* op, Loc loc, unsigned t) {
  const uintptr_t a = (uintptr_t)smem_ptr(off);
  const uint64_t here = intern(loc);
  if (a % 8) raise_fault(FAULT_MEMCHECK, fmt("%s on %s: an mbarrier must be 8-byte aligned %s at %s", op,
                                             describe_shared(a).c_str(), who().c_str(), loc_str(loc).c_str()));
  shared_bounds(a, 8, 2, here);
  auto it = g_mbars.find(a);
  if (it == g_mbars.end())
    raise_fault(FAULT_SYNCCHECK, fmt("%s on %s, which no mbarrier.init initialised %s at %s", op,
                                     describe_shared(a).c_str(), who().c_str(), loc_str(loc).c_str()));
  MBar& b = it->second;
  if (t != b.init_tid && b.init_epoch == g_epoch && !hb_knows(t, b.init_tid, b.init_clk))
    raise_fault(FAULT_RACECHECK,
                fmt("%s on %s before its mbarrier.init by thread %s (%s) is visible: no __syncthreads (after "
                    "fence.mbarrier_init) in between %s at %s", op, mbar_name(a).c_str(),
                    thread_str(b.init_tid).c_str(), loc_str(b.init_loc).c_str(), who().c_str(),
                    loc_str(loc).c_str()));
  return b;
}

void mbar_complete_phase(MBar& b) {
  b.last = b.acc;
  std::fill(b.acc.begin(), b.acc.end(), 0);
  ++b.phase;
  b.pending = b.count;
  g_clk[b.agent] = b.phase + 1;  // TMA bytes landing from now on complete the next phase
}
void mbar_check_tx(MBar& b, Loc loc) {
  if (b.tx > (1 << 20) - 1 || b.tx < -((1 << 20) - 1))
    raise_fault(FAULT_SYNCCHECK, fmt("mbarrier %s: transaction count %lld outside +-(2^20-1) %s at %s",
                                     mbar_name(b.addr).c_str(), b.tx, who().c_str(), loc_str(loc).c_str()));
}
void mbar_arrive_on(MBar& b, unsigned t, unsigned count, bool release, Loc loc) {
  if (count == 0 || count > b.pending)
    raise_fault(FAULT_SYNCCHECK,
                fmt("mbarrier.arrive (count %u) on %s whose phase %u has %u arrival(s) pending of %u: more arrivals "
                    "than mbarrier.init announced %s at %s", count, mbar_name(b.addr).c_str(), b.phase, b.pending,
                    b.count, who().c_str(), loc_str(loc).c_str()));
  if (release) hb_release(t, b.acc.data());
  b.pending -= count;
  if (b.pending == 0 && b.tx == 0) mbar_complete_phase(b);
}
uint64_t mbar_token(const MBar& b) { return ((uint64_t)b.phase << 32) | b.pending; }

struct WaitArg {
  MBar* b;
  unsigned parity;
  char what[256];  // what the waiter waits for, as of the last poll (a deadlock report quotes it)
};
bool mbar_phase_done(void* p) {
  WaitArg* w = static_cast<WaitArg*>(p);
  if ((w->b->phase & 1u) != w->parity) return true;
  snprintf(w->what, sizeof w->what, "mbarrier %s to complete its phase of parity %u (phase %u: %u arrival(s) and "
           "%lld transaction bytes pending)", mbar_name(w->b->addr).c_str(), w->parity, w->b->phase, w->b->pending,
           w->b->tx);
  return false;
}
bool mbar_probe(MBar& b, unsigned t, unsigned parity) {  // try_wait.parity: on success, acquire the completed phase
  if ((b.phase & 1u) == (parity & 1u)) return false;
  if (b.phase > 0) hb_acquire(t, b.last.data());
  return true;
}

// ================================================================================================ TMA
// PTX ISA "cp.async.bulk.tensor" and the CUDA driver's cuTensorMapEncodeTiled (what the map holds: interp's
// wb::TensorMapDesc). The box is box[0] x ... x box[rank-1] elements at coordinates coords[] (signed: a box may start
// before 0); elements outside [0, dims[d]) are not read and land as zeros (as NaN with
// CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA); shared memory receives the box densely, dimension 0 innermost,
// and the swizzle permutes 16-byte chunks on the shared address (Swizzle<B,4,3>: address bits [4, 4+B) ^= bits
// [7, 7+B), B = 1, 2, 3 for 32/64/128-byte). complete_tx counts the whole box, out-of-bounds elements included.
struct Bulk {
  uintptr_t dst;
  std::vector<uint8_t> data;  // the box as it lands (swizzled, OOB filled)
  uintptr_t bar;
  unsigned agent;
  uint64_t where;
};
std::vector<Bulk> g_bulk;

uint32_t swizzle_bits(uint32_t addr, int mode) {
  const int B = mode == 3 ? 3 : mode == 2 ? 2 : mode == 1 ? 1 : 0;
  return addr ^ (((addr >> 7) & ((1u << B) - 1)) << 4);
}

void agent_write(unsigned agent, uint32_t clk, uintptr_t a, size_t n, uint64_t here) {
  if (!g_racecheck) return;
  Sh* e = g_shadow + (a - (uintptr_t)g_win);
  for (size_t i = 0; i < n; ++i, ++e) {
    e->flags = SH_AGENT;
    e->wep = g_epoch;
    e->wtid = (uint16_t)agent;
    e->wclk = clk;
    e->wgen = 0;
    e->wpc = here;
    e->rep = 0;
  }
}

void land_bulk(size_t i) {
  Bulk op = std::move(g_bulk[i]);
  g_bulk[i] = std::move(g_bulk.back());
  g_bulk.pop_back();
  memcpy(reinterpret_cast<void*>(op.dst), op.data.data(), op.data.size());
  agent_write(op.agent, g_clk[op.agent], op.dst, op.data.size(), op.where);
  auto it = g_mbars.find(op.bar);
  if (it == g_mbars.end()) return;  // the barrier was re-initialised: nothing to complete
  MBar& b = it->second;
  b.acc[op.agent] = std::max(b.acc[op.agent], g_clk[op.agent]);  // the complete-tx releases the agent's writes
  b.tx -= (long long)op.data.size();
  if (b.pending == 0 && b.tx == 0) mbar_complete_phase(b);
}

// ================================================================================================ wgmma
// PTX ISA "wgmma.mma_async": D (64xN, f32, in registers) = A (64xK) * B (KxN) + (scale-d ? D : 0); A and B from
// shared memory through 64-bit matrix descriptors (or A from registers); imm-scale-a/b = -1 negates; imm-trans = 1
// reads the operand MN-major. Accumulator fragment (CUTLASS GMMA::CLayout_64xN, the ISA's "Register Fragments" figure):
// thread t = 32w + 4g + q holds rows 16w + g (+8) and columns 8i + 2q (+1) in registers 4i + {0, 1} (+ {2, 3}).
struct WgOp {
  uintptr_t key;                 // lane 0's &d[0]: the accumulator registers
  int nd;
  std::vector<float*> ptr;       // 128 x nd register addresses (one per lane per register)
  std::vector<float> res;        // 128 x nd results
  std::vector<uint32_t> addr;    // shared bytes read (offsets) and their values at issue
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> es;
  Loc loc;
};
struct WgGroup {
  std::vector<WgOp> ops;
  uint32_t stamp;
  unsigned retired = 0;  // warps (bit w) whose wgmma.wait_group retired their part of it
};
struct Wg {
  std::vector<WgOp> open;
  std::vector<WgGroup> groups;  // committed, oldest first; dropped once all 4 warps retired them
  unsigned fenced = 0;          // warps with a wgmma.fence since their last wgmma.wait_group
  bool issued = false;
  std::unordered_map<uintptr_t, std::vector<float>> last;  // what the model last delivered into these registers
  int maxnreg = 0;
};
std::vector<Wg> g_wg;

Wg& wg_of(unsigned t) {
  const unsigned w = t / 128;
  if (g_wg.size() <= w) g_wg.resize(w + 1);
  return g_wg[w];
}

struct Spec {
  int m, n, k, es;
  int atype;  // 0 f16, 1 bf16, 2 e4m3, 3 e5m2, 4 tf32
  bool ok;
};
Spec parse_spec(const char* s) {
  Spec p{0, 0, 0, 0, -1, false};
  char dt[8] = {0}, at[8] = {0}, bt[8] = {0};
  if (sscanf(s, "m%dn%dk%d.%7[^.].%7[^.].%7s", &p.m, &p.n, &p.k, dt, at, bt) != 6) return p;
  if (strcmp(dt, "f32") || strcmp(at, bt)) return p;
  if (!strcmp(at, "f16")) p.atype = 0, p.es = 2;
  else if (!strcmp(at, "bf16")) p.atype = 1, p.es = 2;
  else if (!strcmp(at, "e4m3")) p.atype = 2, p.es = 1;
  else if (!strcmp(at, "e5m2")) p.atype = 3, p.es = 1;
  else if (!strcmp(at, "tf32")) p.atype = 4, p.es = 4;
  else return p;
  p.ok = p.m == 64 && p.n >= 8 && p.n <= 256 && p.n % 8 == 0 && p.k * p.es == 32;
  return p;
}
float elem_value(const uint8_t* p, int atype) {
  switch (atype) {
    case 0: { uint16_t h; memcpy(&h, p, 2); return h2f(h); }
    case 1: { uint16_t h; memcpy(&h, p, 2); uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
    case 2: return ptx90::fp8_value(*p, 0);
    case 3: return ptx90::fp8_value(*p, 1);
    default: { uint32_t u; memcpy(&u, p, 4); u &= 0xffffe000u; float f; memcpy(&f, &u, 4); return f; }  // tf32
  }
}

struct WgmmaIn {
  const char* spec;
  float* const* d;
  int nd;
  const uint32_t* a;
  int na;
  uint64_t da, db;
  int scale_d, sa, sb, ta, tb;
  Loc loc;
};

[[noreturn]] void wg_fault(int kind, const WgmmaIn& in, const std::string& msg) {
  raise_fault(kind, fmt("%s at %s (warpgroup %u of %s block (%u,%u,%u))", msg.c_str(), loc_str(in.loc).c_str(),
                        g_cur->ltid / 128, g_kernel, g_block.x, g_block.y, g_block.z));
}

// the warpgroup's tensor core reads [a, a + n): bounds, then ordered after the write that produced the bytes?
void agent_read(unsigned agent, uint32_t clk, uintptr_t a, size_t n, uint64_t here, bool check, const WgmmaIn& in) {
  shared_bounds(a, n, 0, here);
  if (!g_racecheck) return;
  const uint32_t* vc = hb_row(agent);
  Sh* e = g_shadow + (a - (uintptr_t)g_win);
  for (size_t i = 0; i < n; ++i, ++e) {
    if (check) {
      if (e->flags & SH_ASYNC)
        wg_fault(FAULT_RACECHECK, in, fmt("shared-memory race: the wgmma reads %s while the copy issued by thread %s at "
                                          "%s is still in flight (no wait on the mbarrier that counts it)",
                                          shared_name(a + i).c_str(), thread_str(e->wtid).c_str(),
                                          where_str(e->wpc).c_str()));
      const bool fresh = e->wep >= g_block_epoch;
      if (fresh && e->wtid != agent) {
        const bool known = vc[e->wtid] >= e->wclk && e->wclk != 0;
        if (e->flags & SH_AGENT) {
          if (!known)
            wg_fault(FAULT_RACECHECK, in,
                     fmt("shared-memory race: the wgmma reads %s, written by %s at %s, without having observed the "
                         "mbarrier phase that completes that copy (mbarrier try_wait missing or on the wrong phase)",
                         shared_name(a + i).c_str(), thread_str(e->wtid).c_str(), where_str(e->wpc).c_str()));
        } else {
          if (e->wep == g_epoch && !known)
            wg_fault(FAULT_RACECHECK, in,
                     fmt("shared-memory race: the wgmma reads %s, written by thread %s at %s with no barrier or "
                         "mbarrier ordering the write before the wgmma", shared_name(a + i).c_str(),
                         thread_str(e->wtid).c_str(), where_str(e->wpc).c_str()));
          if (e->wtid < g_nthreads && g_fence_clk[e->wtid] < e->wclk)
            wg_fault(FAULT_RACECHECK, in,
                     fmt("proxy race: the wgmma (async proxy) reads %s, written by thread %s at %s with an ordinary "
                         "store (generic proxy) and no fence.proxy.async by that thread after it",
                         shared_name(a + i).c_str(), thread_str(e->wtid).c_str(), where_str(e->wpc).c_str()));
        }
      }
    }
    // record the read: the agent as one reader (its clock at issue = the stamp its group retires with)
    if (e->rep != g_epoch) {
      e->rep = g_epoch;
      e->rtid = (uint16_t)agent;
      e->rtid2 = NO_TID;
      e->rpc = here;
      e->rgen = 0;
      e->rwarp = MULTI_WARP;
      e->rlanes = 0;
      e->rclk = clk;
      e->flags &= (uint16_t)~SH_MANY;
    } else {
      e->rwarp = MULTI_WARP;
      if (e->rtid == agent) {
        e->rclk = clk;
      } else {
        if (e->rtid2 != NO_TID && e->rtid2 != agent) e->flags |= SH_MANY;
        e->rtid2 = (uint16_t)agent;
        e->rclk2 = clk;
      }
    }
  }
}

// the newest op that writes these registers and that warp w has not retired yet
const WgOp* wg_pending(const Wg& g, uintptr_t key, unsigned w) {
  for (size_t i = g.open.size(); i-- > 0;)
    if (g.open[i].key == key) return &g.open[i];
  for (size_t j = g.groups.size(); j-- > 0;) {
    if (g.groups[j].retired & (1u << w)) continue;
    for (size_t i = g.groups[j].ops.size(); i-- > 0;)
      if (g.groups[j].ops[i].key == key) return &g.groups[j].ops[i];
  }
  return nullptr;
}

void wgmma_fn(Rendezvous& r) {
  const WgmmaIn& in = *static_cast<const WgmmaIn*>(r.in[0]);
  for (int l = 1; l < 128; ++l) {
    const WgmmaIn& o = *static_cast<const WgmmaIn*>(r.in[l]);
    if (strcmp(o.spec, in.spec) || o.da != in.da || o.db != in.db || o.scale_d != in.scale_d || o.sa != in.sa ||
        o.sb != in.sb || o.ta != in.ta || o.tb != in.tb || o.nd != in.nd || (o.a == nullptr) != (in.a == nullptr))
      wg_fault(FAULT_SYNCCHECK, in, fmt("wgmma.mma_async: lane %d's operands differ from lane 0's (descriptors "
                                        "0x%llx/0x%llx vs 0x%llx/0x%llx, scale-d %d vs %d): .aligned needs one "
                                        "instruction for the whole warpgroup", l, (unsigned long long)o.da,
                                        (unsigned long long)o.db, (unsigned long long)in.da,
                                        (unsigned long long)in.db, o.scale_d, in.scale_d));
  }
  const Spec sp = parse_spec(in.spec);
  if (!sp.ok) not_interpreted((std::string("wgmma.mma_async.") + in.spec).c_str(), in.loc);
  const bool rs = in.a != nullptr, fp8 = sp.atype == 2 || sp.atype == 3;
  if (in.nd != sp.n / 2)
    wg_fault(FAULT_SYNCCHECK, in, fmt("wgmma.mma_async.%s takes %d f32 accumulator registers per thread, got %d",
                                      in.spec, sp.n / 2, in.nd));
  if (rs && in.na != 4)
    wg_fault(FAULT_SYNCCHECK, in, fmt("wgmma.mma_async.%s: the register A fragment is 4 registers, got %d", in.spec,
                                      in.na));
  if ((fp8 || sp.atype == 4) && (in.ta || in.tb))
    wg_fault(FAULT_SYNCCHECK, in, fmt("wgmma.mma_async.%s: 8-bit and tf32 operands are K-major only (no imm-trans)",
                                      in.spec));
  const unsigned t0 = g_cur->ltid / 128 * 128, wgi = t0 / 128, agent = wg_agent(wgi);
  Wg& g = wg_of(t0);
  const uintptr_t key = (uintptr_t)in.d[0];
  const WgOp* chained[4];
  for (unsigned w = 0; w < 4; ++w) chained[w] = in.scale_d ? wg_pending(g, key, w) : nullptr;
  if (g.fenced != 0xF) {
    if (!g.issued)
      wg_fault(FAULT_SYNCCHECK, in, "wgmma.mma_async with no wgmma.fence before it (the first wgmma of a warpgroup "
                                    "needs one)");
    if (rs)
      wg_fault(FAULT_SYNCCHECK, in, "register-A wgmma.mma_async after a wgmma.wait_group with no wgmma.fence "
                                    "since: the A fragments were written by ordinary instructions");
    if (in.scale_d && !chained[0] && !chained[1] && !chained[2] && !chained[3]) {
      auto it = g.last.find(key);
      bool same = it != g.last.end();
      for (int l = 0; same && l < 128; ++l)
        for (int i = 0; i < in.nd; ++i) {
          const float v = *static_cast<const WgmmaIn*>(r.in[l])->d[i], w = it->second[(size_t)l * in.nd + i];
          if (memcmp(&v, &w, 4)) { same = false; break; }
        }
      if (!same)
        wg_fault(FAULT_SYNCCHECK, in, "wgmma.mma_async accumulates into registers that ordinary instructions "
                                      "changed since the last wgmma.wait_group, with no wgmma.fence in between");
    }
  }
  g.issued = true;
  // the tensor core knows what the issuing threads know
  uint32_t* arow = hb_row(agent);
  for (unsigned l = 0; l < 128; ++l) {
    hb_join(arow, hb_row(t0 + l));
    arow[t0 + l] = std::max(arow[t0 + l], g_clk[t0 + l]);
  }
  const int M = 64, N = sp.n, K = sp.k, es = sp.es;
  if ((!rs && ptx90::desc_decode(in.da).base_offset) || ptx90::desc_decode(in.db).base_offset)
    not_interpreted("wgmma descriptor with a nonzero matrix base offset (bits 49-51)", in.loc);
  WgOp op;
  op.key = key;
  op.nd = in.nd;
  op.loc = in.loc;
  const uint64_t here = intern(in.loc);
  std::vector<double> A((size_t)M * K), B((size_t)K * N);
  auto fetch = [&](uint32_t off) -> float {
    const uintptr_t a = (uintptr_t)smem_ptr(off);
    if (off >= WIN_SIZE)
      wg_fault(FAULT_MEMCHECK, in, fmt("wgmma operand address 0x%x is outside shared memory", off));
    agent_read(agent, g_clk[agent], a, es, here, true, in);
    op.addr.push_back(off);
    op.es.push_back((uint8_t)es);
    for (int b = 0; b < es; ++b) op.bytes.push_back(reinterpret_cast<const uint8_t*>(a)[b]);
    return elem_value(reinterpret_cast<const uint8_t*>(a), sp.atype);
  };
  if (rs) {
    for (int l = 0; l < 128; ++l) {
      const WgmmaIn& li = *static_cast<const WgmmaIn*>(r.in[l]);
      const int w = l / 32, gq = (l % 32) / 4, q = l % 4;
      for (int j = 0; j < 4; ++j) {
        const int row = 16 * w + gq + 8 * (j % 2);
        const uint32_t v = li.a[j];
        if (es == 2) {
          for (int h = 0; h < 2; ++h) {
            const uint8_t b2[2] = {(uint8_t)(v >> (16 * h)), (uint8_t)(v >> (16 * h + 8))};
            A[(size_t)row * K + 2 * q + 8 * (j / 2) + h] = elem_value(b2, sp.atype);
          }
        } else if (es == 1) {
          for (int h = 0; h < 4; ++h) {
            const uint8_t b1 = (uint8_t)(v >> (8 * h));
            A[(size_t)row * K + 4 * q + 16 * (j / 2) + h] = elem_value(&b1, sp.atype);
          }
        } else {
          not_interpreted("register-A wgmma for tf32", in.loc);
        }
      }
    }
  } else {
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) A[(size_t)m * K + k] = fetch(ptx90::desc_address(in.da, !in.ta, es, m, k));
  }
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) B[(size_t)k * N + n] = fetch(ptx90::desc_address(in.db, !in.tb, es, n, k));
  if (in.sa < 0) for (auto& v : A) v = -v;
  if (in.sb < 0) for (auto& v : B) v = -v;
  // accumulate into each lane's registers (or the pending result of the same registers)
  op.ptr.resize((size_t)128 * in.nd);
  op.res.resize((size_t)128 * in.nd);
  std::vector<float> arow_f(K), bcol_f(K);
  for (int l = 0; l < 128; ++l) {
    const WgmmaIn& li = *static_cast<const WgmmaIn*>(r.in[l]);
    for (int i = 0; i < in.nd; ++i) {
      int row, col;
      ptx90::acc_coord(l, i, &row, &col);
      float c = 0.f;
      const WgOp* ch = chained[l / 32];
      if (in.scale_d) c = ch ? ch->res[(size_t)l * in.nd + i] : *li.d[i];
      float out;
      if (fp8) {
        for (int k = 0; k < K; ++k) arow_f[k] = (float)A[(size_t)row * K + k], bcol_f[k] = (float)B[(size_t)k * N + col];
        out = ptx90::qgmma_accumulate(c, arow_f.data(), bcol_f.data(), K);
      } else {
        double s = 0;
        for (int k = 0; k < K; ++k) s += A[(size_t)row * K + k] * B[(size_t)k * N + col];
        out = (float)((double)c + s);
      }
      op.ptr[(size_t)l * in.nd + i] = li.d[i];
      op.res[(size_t)l * in.nd + i] = out;
    }
  }
  // until the wait that retires it, the registers hold no defined value
  for (int l = 0; l < 128; ++l) {
    const WgmmaIn& li = *static_cast<const WgmmaIn*>(r.in[l]);
    for (int i = 0; i < in.nd; ++i) *li.d[i] = __builtin_nanf("");
  }
  g.open.push_back(std::move(op));
}

// warp w of the warpgroup starting at thread t0 retires group grp: at the first warp's wait the bytes the wgmmas read
// must be unchanged since issue and the reads count until then; the warp's registers get their results and its
// threads learn the group's stamp
void wg_retire(Wg& g, unsigned t0, unsigned w, WgGroup& grp, Loc wait_loc) {
  const unsigned agent = wg_agent(t0 / 128);
  for (WgOp& op : grp.ops) {  // the first warp to wait completes the operation (its reads); later ones only collect
    if (grp.retired) break;
    size_t bi = 0;
    for (size_t j = 0; j < op.addr.size(); ++j) {
      const uint8_t* p = reinterpret_cast<const uint8_t*>(smem_ptr(op.addr[j]));
      if (memcmp(p, &op.bytes[bi], op.es[j])) {
        const Sh* e = g_shadow + op.addr[j];
        raise_fault(FAULT_RACECHECK,
                    fmt("shared-memory race: %s, read by the wgmma issued at %s, changed before the "
                        "wgmma.wait_group (%s) that retires it (last written by %s at %s): its slot was released or "
                        "overwritten while the tensor core could still read it (warpgroup %u of %s block (%u,%u,%u))",
                        shared_name((uintptr_t)p).c_str(), loc_str(op.loc).c_str(), loc_str(wait_loc).c_str(),
                        g_racecheck ? thread_str(e->wtid).c_str() : "?",
                        g_racecheck ? where_str(e->wpc).c_str() : "?", t0 / 128, g_kernel, g_block.x, g_block.y,
                        g_block.z));
      }
      bi += op.es[j];
    }
    WgmmaIn dummy{};
    dummy.loc = op.loc;
    const uint64_t here = intern(op.loc);
    for (size_t j = 0; j < op.addr.size(); ++j)
      agent_read(agent, grp.stamp, (uintptr_t)smem_ptr(op.addr[j]), op.es[j], here, false, dummy);
  }
  for (size_t k = 0; k < grp.ops.size(); ++k) {
    WgOp& op = grp.ops[k];
    bool later = false;  // a newer op still pending on the same registers: they stay undefined
    for (size_t k2 = k + 1; k2 < grp.ops.size(); ++k2) later |= grp.ops[k2].key == op.key;
    for (auto& gg : g.groups)
      if (&gg != &grp && !(gg.retired & (1u << w)))
        for (auto& o2 : gg.ops) later |= o2.key == op.key;
    for (auto& o2 : g.open) later |= o2.key == op.key;
    if (later) continue;
    std::vector<float>& last = g.last[op.key];
    last.resize(op.res.size());
    for (size_t j = (size_t)32 * w * op.nd; j < (size_t)32 * (w + 1) * op.nd; ++j) *op.ptr[j] = last[j] = op.res[j];
  }
  for (unsigned l = 0; l < 32; ++l) {
    uint32_t* row = hb_row(t0 + 32 * w + l);
    row[agent] = std::max(row[agent], grp.stamp);
  }
  grp.retired |= 1u << w;
}

struct WaitIn {
  int keep;
  Loc loc;
};
void wgmma_wait_fn(Rendezvous& r) {  // one warp: its part of every group but the `keep` newest
  const WaitIn& in = *static_cast<const WaitIn*>(r.in[0]);
  for (int l = 1; l < 32; ++l)
    if (static_cast<const WaitIn*>(r.in[l])->keep != in.keep)
      raise_fault(FAULT_SYNCCHECK, fmt("wgmma.wait_group at %s: lane %d waits for %d groups, lane 0 for %d (.aligned)",
                                       loc_str(in.loc).c_str(), l, static_cast<const WaitIn*>(r.in[l])->keep,
                                       in.keep));
  const unsigned t0 = g_cur->ltid / 128 * 128, w = (g_cur->ltid % 128) / 32;
  Wg& g = wg_of(t0);
  int pending = 0;
  for (auto& grp : g.groups) pending += !(grp.retired & (1u << w));
  for (auto& grp : g.groups) {
    if (pending <= in.keep) break;
    if (grp.retired & (1u << w)) continue;
    wg_retire(g, t0, w, grp, in.loc);
    --pending;
  }
  while (!g.groups.empty() && g.groups.front().retired == 0xF) g.groups.erase(g.groups.begin());
  g.fenced &= ~(1u << w);
}
void wgmma_commit_fn(Rendezvous&) {
  const unsigned t0 = g_cur->ltid / 128 * 128, agent = wg_agent(t0 / 128);
  Wg& g = wg_of(t0);
  g.groups.push_back(WgGroup{std::move(g.open), g_clk[agent], 0});
  g.open.clear();
  ++g_clk[agent];
}
void wgmma_fence_fn(Rendezvous&) { wg_of(g_cur->ltid).fenced = 0xF; }

struct RegIn {
  int inc, regs;
  Loc loc;
};
void setmaxnreg_fn(Rendezvous& r) {
  const RegIn& in = *static_cast<const RegIn*>(r.in[0]);
  for (int l = 1; l < 128; ++l) {
    const RegIn& o = *static_cast<const RegIn*>(r.in[l]);
    if (o.inc != in.inc || o.regs != in.regs)
      raise_fault(FAULT_SYNCCHECK, fmt("setmaxnreg at %s: lane %d asks %s %d, lane 0 %s %d (.aligned: one value per "
                                       "warpgroup)", loc_str(in.loc).c_str(), l, o.inc ? "inc" : "dec", o.regs,
                                       in.inc ? "inc" : "dec", in.regs));
  }
  const unsigned t0 = g_cur->ltid / 128 * 128;
  Wg& g = wg_of(t0);
  if (g.maxnreg && (in.inc ? in.regs < g.maxnreg : in.regs > g.maxnreg))
    raise_fault(FAULT_SYNCCHECK, fmt("setmaxnreg.%s.sync.aligned.u32 %d at %s: warpgroup %u already has %d registers "
                                     "per thread (.inc must not lower the count, .dec must not raise it)",
                                     in.inc ? "inc" : "dec", in.regs, loc_str(in.loc).c_str(), t0 / 128, g.maxnreg));
  g.maxnreg = in.regs;
  const unsigned nwg = g_nthreads / 128;
  long total = 0;
  for (unsigned w = 0; w < nwg; ++w) {
    if (w >= g_wg.size() || !g_wg[w].maxnreg) return;  // some warpgroup's count is still ptxas's: unknown here
    total += 128L * g_wg[w].maxnreg;
  }
  if (total > 65536)
    raise_fault(FAULT_SYNCCHECK, fmt("setmaxnreg at %s: the block's warpgroups ask %ld registers in all, more than the "
                                     "65,536 of an SM: setmaxnreg.inc would wait forever", loc_str(in.loc).c_str(),
                                     total));
}

// ================================================================================================ runtime hooks
void ptx90_block_begin() {
  if (g_racecheck)  // copies left in flight (a faulted launch, a block that never waited): no longer pending
    for (const Bulk& op : g_bulk)
      for (size_t i = 0; i < op.data.size(); ++i) g_shadow[op.dst - (uintptr_t)g_win + i].flags = 0;
  g_mbars.clear();
  g_mbar_agents = 0;
  g_bulk.clear();
  g_wg.clear();
  g_fence_clk.assign(g_nthreads, 0);
}
void ptx90_thread_exit(unsigned t) {
  if (t / 128 >= g_wg.size()) return;
  const Wg& g = g_wg[t / 128];
  const unsigned w = (t % 128) / 32;
  size_t pending = 0;
  Loc first{nullptr, 0};
  for (auto& grp : g.groups)
    if (!(grp.retired & (1u << w))) {
      if (!pending++ && !grp.ops.empty()) first = grp.ops.front().loc;
    }
  if (!first.file && !g.open.empty()) first = g.open.front().loc;
  if (pending || !g.open.empty()) {
    raise_fault(FAULT_SYNCCHECK,
                fmt("thread %s exits with %zu wgmma group(s) (and %zu uncommitted wgmma) not retired by "
                    "wgmma.wait_group: the accumulators of the wgmma at %s were never delivered, in %s block "
                    "(%u,%u,%u)", thread_str(t).c_str(), pending, g.open.size(),
                    first.file ? loc_str(first).c_str() : "?", g_kernel, g_block.x, g_block.y, g_block.z));
  }
}
bool ptx90_land(bool all) {
  if (g_bulk.empty()) return false;
  if (all) {
    while (!g_bulk.empty()) land_bulk(g_bulk.size() - 1);
  } else {
    land_bulk((size_t)(rng() % g_bulk.size()));
  }
  return true;
}
std::string agent_name(unsigned id) {
  if (!g_hb_w || id < agent_base()) return fmt("#%u", id);
  const unsigned k = id - agent_base();
  if (k < HB_WG_AGENTS) return fmt("the tensor core of warpgroup %u", k);
  for (auto& kv : g_mbars)
    if (kv.second.agent == id) return fmt("the TMA unit (copy completing on mbarrier %s)", mbar_name(kv.first).c_str());
  return "the TMA unit";
}

}  // namespace

// ================================================================================================ entry points
namespace ptx90 {

void mbar_init(uint32_t bar, uint32_t count, Loc loc) {
  const unsigned t = cur_tid("mbarrier.init", loc);
  const uintptr_t a = (uintptr_t)smem_ptr(bar);
  if (a % 8) raise_fault(FAULT_MEMCHECK, fmt("mbarrier.init on %s: an mbarrier must be 8-byte aligned %s at %s",
                                             describe_shared(a).c_str(), who().c_str(), loc_str(loc).c_str()));
  check_access(reinterpret_cast<void*>(a), 8, 1, loc);  // bounds; and a write of the object, for racecheck
  if (count == 0 || count > (1u << 20) - 1)
    raise_fault(FAULT_SYNCCHECK, fmt("mbarrier.init on %s with count %u (1 .. 2^20-1) %s at %s",
                                     mbar_name(a).c_str(), count, who().c_str(), loc_str(loc).c_str()));
  hb_enable();
  MBar& b = g_mbars[a];
  if (!b.agent) {
    if (g_mbar_agents + HB_WG_AGENTS >= HB_AGENTS) not_interpreted("more than 120 mbarriers in one block", loc);
    b.agent = agent_base() + HB_WG_AGENTS + g_mbar_agents++;
  }
  b.addr = a;
  b.count = b.pending = count;
  b.phase = 0;
  b.tx = 0;
  b.init_tid = t;
  b.init_epoch = g_epoch;
  b.init_clk = g_clk[t];
  b.init_loc = loc;
  b.acc.assign(g_hb_w, 0);
  b.last.assign(g_hb_w, 0);
  g_clk[b.agent] = 1;
}
uint64_t mbar_arrive(uint32_t bar, uint32_t count, int release, Loc loc) {
  const unsigned t = cur_tid("mbarrier.arrive", loc);
  MBar& b = mbar_get(bar, "mbarrier.arrive", loc, t);
  const uint64_t tok = mbar_token(b);
  mbar_arrive_on(b, t, count, release != 0, loc);
  return tok;
}
uint64_t mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes, Loc loc) {
  const unsigned t = cur_tid("mbarrier.arrive.expect_tx", loc);
  MBar& b = mbar_get(bar, "mbarrier.arrive.expect_tx", loc, t);
  const uint64_t tok = mbar_token(b);
  b.tx += bytes;  // expect-tx first, then the arrive-on (PTX: "performs an expect-tx operation prior to")
  mbar_check_tx(b, loc);
  mbar_arrive_on(b, t, 1, true, loc);
  return tok;
}
void mbar_expect_tx(uint32_t bar, uint32_t bytes, Loc loc) {
  const unsigned t = cur_tid("mbarrier.expect_tx", loc);
  MBar& b = mbar_get(bar, "mbarrier.expect_tx", loc, t);
  b.tx += bytes;
  mbar_check_tx(b, loc);
}
void mbar_complete_tx(uint32_t bar, uint32_t bytes, Loc loc) {
  const unsigned t = cur_tid("mbarrier.complete_tx", loc);
  MBar& b = mbar_get(bar, "mbarrier.complete_tx", loc, t);
  b.tx -= bytes;
  mbar_check_tx(b, loc);
  if (b.pending == 0 && b.tx == 0) mbar_complete_phase(b);
}
bool mbar_try_wait_parity(uint32_t bar, uint32_t parity, Loc loc) {
  const unsigned t = cur_tid("mbarrier.try_wait", loc);
  MBar& b = mbar_get(bar, "mbarrier.try_wait", loc, t);
  if (mbar_probe(b, t, parity)) return true;
  yield_running();  // a failed probe in a loop: let the others (and the copies) progress
  return false;
}
void mbar_wait_parity(uint32_t bar, uint32_t parity, Loc loc) {
  const unsigned t = cur_tid("mbarrier.try_wait", loc);
  MBar& b = mbar_get(bar, "mbarrier.try_wait", loc, t);
  WaitArg w{&b, parity & 1u, {0}};
  while (!mbar_probe(b, t, parity)) {
    mbar_phase_done(&w);
    wait_until(mbar_phase_done, &w, w.what, loc);
  }
}
void fence_mbarrier_init(Loc loc) { cur_tid("fence.mbarrier_init", loc); }
void fence_proxy_async(Loc loc) {
  const unsigned t = cur_tid("fence.proxy.async", loc);
  g_fence_clk[t] = g_clk[t];
  ++g_clk[t];
}

void tma_load(uint32_t dst, uint64_t map_addr, uint32_t bar, int rank, const int* coords, Loc loc) {
  const unsigned t = cur_tid("cp.async.bulk.tensor", loc);
  const uint64_t here = intern(loc);
  const CUtensorMap* map = reinterpret_cast<const CUtensorMap*>(map_addr);
  check_access(map, sizeof(CUtensorMap), 0, loc);
  TensorMapDesc d;
  memcpy(&d, map, sizeof d);
  if (d.magic != 0x574254d0u)
    raise_fault(FAULT_MEMCHECK, fmt("cp.async.bulk.tensor: the tensor map at %p was not encoded by "
                                    "cuTensorMapEncodeTiled %s at %s", (const void*)map, who().c_str(),
                                    loc_str(loc).c_str()));
  if ((int)d.rank != rank)
    raise_fault(FAULT_SYNCCHECK, fmt("cp.async.bulk.tensor.%dd with a tensor map of rank %d %s at %s", rank, d.rank,
                                     who().c_str(), loc_str(loc).c_str()));
  if (d.interleave != 0) not_interpreted("cp.async.bulk.tensor with an interleaved tensor map", loc);
  for (int i = 0; i < rank; ++i)
    if (d.estr[i] != 1) not_interpreted("cp.async.bulk.tensor with element strides other than 1", loc);
  const uintptr_t a = (uintptr_t)smem_ptr(dst);
  if (dst % 128)
    raise_fault(FAULT_MEMCHECK, fmt("cp.async.bulk.tensor destination %s is not 128-byte aligned %s at %s",
                                    describe_shared(a).c_str(), who().c_str(), loc_str(loc).c_str()));
  MBar& b = mbar_get(bar, "cp.async.bulk.tensor (its mbarrier)", loc, t);
  hb_enable();
  const size_t es = d.elem_bytes;
  size_t elems = 1;
  for (int i = 0; i < rank; ++i) elems *= d.box[i];
  const size_t bytes = elems * es, row = (size_t)d.box[0] * es;
  // the issuing thread's write to the destination: bounds, and ordered after every earlier access to those bytes
  check_slow(a, bytes, 1, here);
  Bulk op;
  op.dst = a;
  op.bar = b.addr;
  op.agent = b.agent;
  op.where = here;
  op.data.assign(bytes, 0);
  const bool nan_fill = d.oobfill == 1 && (d.dtype == 6 || d.dtype == 7 || d.dtype == 8 || d.dtype == 9 ||
                                           d.dtype == 10);
  const size_t rows = elems / d.box[0];
  std::vector<uint8_t> line(row);
  for (size_t rr = 0; rr < rows; ++rr) {
    long long gc[5] = {0, 0, 0, 0, 0};
    bool oob_row = false;
    size_t rem = rr;
    for (int i = 1; i < rank; ++i) {
      gc[i] = (long long)coords[i] + (long long)(rem % d.box[i]);
      rem /= d.box[i];
      if (gc[i] < 0 || gc[i] >= (long long)d.dims[i]) oob_row = true;
    }
    uintptr_t g = (uintptr_t)d.base;
    for (int i = 1; i < rank; ++i) g += (uintptr_t)gc[i] * d.strides[i - 1];
    // in-bounds run of dimension 0
    const long long c0 = coords[0];
    long long lo = std::max(0LL, -c0), hi = std::min((long long)d.box[0], (long long)d.dims[0] - c0);
    if (oob_row || hi <= lo) lo = hi = 0;
    if (nan_fill) {
      for (size_t e = 0; e < d.box[0]; ++e) {
        uint8_t* p = line.data() + e * es;
        if (es == 2) { const uint16_t v = d.dtype == 9 ? 0x7fc0 : 0x7e00; memcpy(p, &v, 2); }
        else if (es == 4) { const uint32_t v = 0x7fc00000u; memcpy(p, &v, 4); }
        else { const uint64_t v = 0x7ff8000000000000ull; memcpy(p, &v, 8); }
      }
    } else {
      std::fill(line.begin(), line.end(), 0);
    }
    if (hi > lo) {
      const void* src = reinterpret_cast<const void*>(g + (uintptr_t)(c0 + lo) * es);
      check_access(src, (size_t)(hi - lo) * es, 0, loc);
      memcpy(line.data() + lo * es, src, (size_t)(hi - lo) * es);
    }
    for (size_t off = 0; off < row; off += 16) {  // 16-byte chunks move as units under the swizzle
      const uint32_t to = swizzle_bits((uint32_t)(dst + rr * row + off), d.swizzle) - dst;
      memcpy(op.data.data() + to, line.data() + off, std::min<size_t>(16, row - off));
    }
  }
  if (g_racecheck) {  // in flight: any access before it lands and is acquired is a race
    Sh* e = g_shadow + (a - (uintptr_t)g_win);
    for (size_t i = 0; i < bytes; ++i, ++e) {
      e->flags = SH_ASYNC;
      e->wtid = (uint16_t)t;
      e->wpc = here;
    }
  }
  g_bulk.push_back(std::move(op));
}

void wgmma_fence(Loc loc) {
  cur_tid("wgmma.fence", loc);
  hb_enable();
  const unsigned long long all[2] = {~0ull, ~0ull};
  warpgroup_rendezvous(all, "wgmma.fence.sync.aligned", nullptr, nullptr, wgmma_fence_fn, nullptr, loc);
}
void wgmma_commit(Loc loc) {
  cur_tid("wgmma.commit_group", loc);
  hb_enable();
  const unsigned long long all[2] = {~0ull, ~0ull};
  warpgroup_rendezvous(all, "wgmma.commit_group.sync.aligned", nullptr, nullptr, wgmma_commit_fn, nullptr, loc);
}
void wgmma_wait(int keep, Loc loc) {
  cur_tid("wgmma.wait_group", loc);
  hb_enable();
  if (keep < 0 || keep > 7)
    raise_fault(FAULT_SYNCCHECK, fmt("wgmma.wait_group %d at %s: N is 0..7 %s", keep, loc_str(loc).c_str(),
                                     who().c_str()));
  WaitIn in{keep, loc};
  warp_rendezvous(0xffffffffu, "wgmma.wait_group.sync.aligned", &in, nullptr, wgmma_wait_fn, nullptr, loc);
}
void wgmma(const char* spec, float* const* d, int nd, const uint32_t* a, int na, uint64_t da, uint64_t db, int scale_d,
           int scale_a, int scale_b, int tnsp_a, int tnsp_b, Loc loc) {
  cur_tid("wgmma.mma_async", loc);
  hb_enable();
  WgmmaIn in{spec, d, nd, a, na, da, db, scale_d != 0, scale_a, scale_b, tnsp_a, tnsp_b, loc};
  const unsigned long long all[2] = {~0ull, ~0ull};
  warpgroup_rendezvous(all, "wgmma.mma_async.sync.aligned", &in, nullptr, wgmma_fn, nullptr, loc);
}
void setmaxnreg(int inc, int regs, Loc loc) {
  cur_tid("setmaxnreg", loc);
  if (regs % 8 || regs < 24 || regs > 256)
    raise_fault(FAULT_SYNCCHECK, fmt("setmaxnreg.%s.sync.aligned.u32 %d at %s: the count must be a multiple of 8 in "
                                     "24..256 %s", inc ? "inc" : "dec", regs, loc_str(loc).c_str(), who().c_str()));
  RegIn in{inc, regs, loc};
  const unsigned long long all[2] = {~0ull, ~0ull};
  warpgroup_rendezvous(all, "setmaxnreg.sync.aligned", &in, nullptr, setmaxnreg_fn, nullptr, loc);
}

// ---- pure functions
Desc desc_decode(uint64_t v) {
  Desc d;
  d.start = (uint32_t)(v & 0x3FFF) << 4;
  d.lbo = (uint32_t)((v >> 16) & 0x3FFF) << 4;
  d.sbo = (uint32_t)((v >> 32) & 0x3FFF) << 4;
  d.base_offset = (uint32_t)((v >> 49) & 0x7);
  d.layout = (uint32_t)(v >> 62);
  return d;
}
uint32_t swizzle(uint32_t addr, int mode) { return swizzle_bits(addr, mode); }
// Canonical layouts in bytes (CUTLASS's, in units of elements there; T = 16 / es elements per 16-byte chunk):
//  K-major,  interleave: ((8,m),(T,2)):((1T,SBO),(1,LBO))   32B/64B/128B: ((8,m),(T,2)):((2T|4T|8T,SBO),(1,T))
//  MN-major, interleave: ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
//            32B/64B/128B: ((T,2|4|8,m),(8,k)):((1,T,LBO),(2T|4T|8T,SBO))
uint32_t desc_address(uint64_t desc, int kmajor, int es, int mn, int k) {
  const Desc d = desc_decode(desc);
  const uint32_t T = 16 / es, span = d.layout == 1 ? 128 : d.layout == 2 ? 64 : d.layout == 3 ? 32 : 16;
  uint32_t off;
  if (kmajor) {
    const uint32_t r0 = mn % 8, r1 = mn / 8, k0 = k % T, k1 = k / T;
    off = r0 * span + r1 * d.sbo + k0 * es + k1 * (d.layout == 0 ? d.lbo : 16);
  } else {
    const uint32_t chunks = span / 16;  // 16-byte chunks of MN per row of the atom
    const uint32_t n0 = mn % T, n1 = (mn / T) % chunks, n2 = mn / (T * chunks), k0 = k % 8, k1 = k / 8;
    if (d.layout == 0) off = n0 * es + n2 * d.sbo + k0 * 16 + k1 * d.lbo;
    else off = n0 * es + n1 * 16 + n2 * d.lbo + k0 * span + k1 * d.sbo;
  }
  const int mode = d.layout == 1 ? 3 : d.layout == 2 ? 2 : d.layout == 3 ? 1 : 0;
  return swizzle_bits(d.start + off, mode);
}
void acc_coord(int t, int i, int* row, int* col) {
  const int w = t / 32, g = (t % 32) / 4, q = t % 4;
  *row = 16 * w + g + 8 * ((i / 2) % 2);
  *col = 8 * (i / 4) + 2 * q + (i % 2);
}
float fp8_value(unsigned char b, int e5m2) {
  const int s = b >> 7;
  float v;
  if (!e5m2) {  // e4m3 (OCP "FN"): bias 7, no infinities, S.1111.111 is NaN
    const int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return __builtin_nanf("");
    v = e ? ldexpf(1.f + m / 8.f, e - 7) : ldexpf(m / 8.f, -6);
  } else {  // e5m2: bias 15, IEEE-like infinities and NaNs
    const int e = (b >> 2) & 31, m = b & 3;
    if (e == 31) return m ? __builtin_nanf("") : (s ? -__builtin_inff() : __builtin_inff());
    v = e ? ldexpf(1.f + m / 4.f, e - 15) : ldexpf(m / 4.f, -14);
  }
  return s ? -v : v;
}
// Hopper's fp8 tensor-core accumulation keeps fewer bits than fp32: DeepSeek-V3 (arXiv 2412.19437, §3.3.2) measures
// "around 14 bits" on H800; SageAttention2 (arXiv 2411.10958) reports the f32 accumulator of fp8 mma to be FP22
// (1 sign, 8 exponent, 13 mantissa bits). Not published: the rounding and the granularity. Model (an assumption, in
// the manner of Fasi et al.'s measurements of earlier tensor cores): per k32 instruction, the accumulator and the 32
// exact products are aligned to the largest exponent among them, each truncated (toward zero) to 13 fraction bits of
// it, summed exactly, and the sum truncated to 13 fraction bits (14 significant). Small products are lost next to a
// large accumulator (swamping), which is what forces the fp32 promotion every few instructions.
float qgmma_accumulate(float c, const float* a, const float* b, int n) {
  double terms[257];
  int nt = 0;
  bool finite = std::isfinite(c);
  terms[nt++] = c;
  for (int i = 0; i < n && nt < 257; ++i) {
    terms[nt] = (double)a[i] * (double)b[i];
    finite &= std::isfinite(terms[nt]);
    ++nt;
  }
  if (!finite) {
    double s = 0;
    for (int i = 0; i < nt; ++i) s += terms[i];
    return (float)s;
  }
  int emax = INT_MIN;
  for (int i = 0; i < nt; ++i)
    if (terms[i] != 0) emax = std::max(emax, std::ilogb(terms[i]));
  if (emax == INT_MIN) return 0.f;
  const double q = std::ldexp(1.0, emax - 13);
  double s = 0;
  for (int i = 0; i < nt; ++i) s += std::trunc(terms[i] / q) * q;
  if (s == 0) return 0.f;
  const double qq = std::ldexp(1.0, std::ilogb(s) - 13);
  return (float)(std::trunc(s / qq) * qq);
}

}  // namespace ptx90
}  // namespace wb
