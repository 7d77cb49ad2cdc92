// wbcpu_rt.cpp — the CPU runtime of the workbench's CUDA interpret mode (linked into every interpreted library,
// compiled without instrumentation, symbols hidden except the wbi_* entry points Python calls).
//
// Execution: a launch runs its blocks one after another, in a per-seed random order, on the calling OS thread. Each
// CUDA thread of the running block is a fiber (own stack, a hand-written x86-64 context switch: callee-saved
// registers, rsp, mxcsr and the x87 control word; ucontext elsewhere). A fiber runs until it blocks — at a barrier,
// a warp collective, a predicate wait — or exits; the next one is picked at random among the runnable ones, so the
// order of threads inside each barrier interval changes with the seed.
//
// Checks (one line each, naming kernel, block, thread and source line):
//  * memcheck: every instrumented load/store (the __asan_* hooks below) must fall in the calling fiber's own stack,
//    a registered global buffer (tensors passed in, cudaMalloc, kernel parameters, the library's static data) or
//    the shared window (each __shared__ variable is its own slot with red zones; the dynamic area is as large as the
//    launch asked). Misaligned accesses come from UBSan's alignment check (static type: a float4 at 4 mod 16).
//  * racecheck: a shadow record per shared byte (last writer; readers of the current barrier epoch, per warp) finds
//    a byte written by one thread and read or written by another (or read, then written by another) with no
//    __syncthreads between them and, inside one warp, no warp collective naming both.
//  * synccheck: threads waiting at different __syncthreads() lines; warp collectives whose mask omits the caller or
//    names exited lanes; deadlock (every live thread blocked and nothing can complete).
// A fault ends the launch: the faulting fiber switches to the scheduler and never resumes.
//
// Barrier rule (PTX ISA, `exit`: "if the exiting threads are holding up the barrier, the barrier is released"): a
// thread that returns early does not hold up later barriers of its block, so `if (i >= n) return;` before a
// __syncthreads() is allowed. __syncthreads() compiles to bar.sync.aligned, which requires every thread to execute
// the *same* barrier instruction: threads waiting at different __syncthreads() sites are a synccheck error here.
#include "../include/wbcpu.h"
#include "../include/cuda.h"
#include "../include/cublas_v2.h"

#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#define WBI_EXPORT extern "C" __attribute__((visibility("default")))

// ------------------------------------------------------------------------------------------------ built-in variables
WB_HIDDEN uint3 threadIdx;
WB_HIDDEN uint3 blockIdx;
WB_HIDDEN dim3 blockDim;
WB_HIDDEN dim3 gridDim;

namespace wb {
namespace {

// ------------------------------------------------------------------------------------------------ context switch
#if defined(__x86_64__)
extern "C" void wb_ctx_swap(void** save_sp, void* new_sp);
extern "C" void wb_ctx_start();
asm(R"(
  .text
  .p2align 4
  .hidden wb_ctx_swap
  .type wb_ctx_swap,@function
wb_ctx_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size wb_ctx_swap, .-wb_ctx_swap
  .p2align 4
  .hidden wb_ctx_start
  .type wb_ctx_start,@function
wb_ctx_start:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size wb_ctx_start, .-wb_ctx_start
)");
#else
#include <ucontext.h>
#endif

// ------------------------------------------------------------------------------------------------ state
enum ThreadState : uint8_t { T_RUNNABLE, T_RUNNING, T_BARRIER, T_COLLECTIVE, T_PRED, T_EXITED };

struct Coll;
struct Fiber {
  void* sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t uc;
#endif
  char* stack_lo = nullptr;
  size_t stack_size = 0;
  uint3 tid{};
  unsigned ltid = 0;
  ThreadState state = T_EXITED;
  Loc wait_loc{nullptr, 0};
  const char* wait_what = nullptr;
  Coll* coll = nullptr;
  bool (*pred)(void*) = nullptr;
  void* pred_arg = nullptr;
  int bar_result = 0;
  unsigned committed = 0;  // cp.async groups committed
};

struct Coll {
  int lanes;  // 32 (warp) or 128 (warpgroup)
  unsigned group;
  const char* kind;
  unsigned long long mask[2], arrived[2];
  Rendezvous r;
  RendezvousFn fn;
  Loc loc;
  Fiber* first;
};

struct Buffer {
  uintptr_t lo, hi;
  std::string name;
};

struct Slot {
  uintptr_t lo, hi;
  const char* name;
  const char* file;
  int line;
};

struct AsyncOp {
  unsigned long long id;
  unsigned owner;
  char* dst;
  const char* src;
  size_t n, src_n;
  long group;  // -1: not committed yet
  bool landed;
  uint64_t where;
  void (*on_done)(void*);
  void* user;
};

// racecheck shadow: one record per byte of the shared window
struct Sh {
  uint64_t wpc, rpc;
  uint32_t wep, rep, wgen, rgen, rlanes;
  uint16_t wtid, rtid, rtid2, rwarp;
  uint16_t flags, pad;
  uint32_t wclk, rclk, rclk2, pad2;  // happens-before clocks of the writer and of the two readers recorded (hb_*)
};
static_assert(sizeof(Sh) == 64, "shadow record");
// SH_AGENT: last written by an asynchronous agent (a TMA copy): only happens-before orders it, never a bare barrier
// epoch. SH_MANY: more than two distinct readers this epoch (their clocks are not all kept).
enum : uint16_t { SH_ASYNC = 1, SH_AGENT = 2, SH_MANY = 4 };
constexpr uint16_t NO_TID = 0xffff, MULTI_WARP = 0xffff;

struct WarpSync {
  uint32_t gen;
  uint32_t ring[64];  // lane masks of the last 64 completed collectives of this warp
};

constexpr size_t DYN_MAX = 256 * 1024;           // dynamic shared area (the H100 opt-in limit is 227 KB)
constexpr size_t GAP = 4096;
constexpr size_t ARENA_MAX = 8u << 20;           // static __shared__ slots of every kernel of the library
constexpr size_t WIN_SIZE = DYN_MAX + GAP + ARENA_MAX;
constexpr size_t REDZONE = 64;

struct Fault {
  int kind = FAULT_NONE;
  int code = 0;
  std::string msg;
};

// global runtime state (one launch at a time per library)
Fiber g_main;
Fiber* g_cur = &g_main;
uintptr_t g_fast_lo = 0, g_fast_size = ~(uintptr_t)0;  // what the hooks let through: the running fiber's own stack
                                                        // (everything outside fibers and inside model code)
uintptr_t g_stack_lo = 0, g_stack_size = ~(uintptr_t)0;  // the running fiber's own stack, always
std::vector<Fiber> g_fibers;
char* g_stacks = nullptr;
size_t g_stack_bytes = 64 * 1024, g_stacks_n = 0;
std::vector<unsigned> g_runnable;
unsigned g_nthreads = 0, g_live = 0;
std::vector<unsigned> g_bar_waiters;
Loc g_bar_loc{nullptr, 0};
int g_bar_acc[3];  // count, and, or
std::vector<Coll*> g_colls;
std::vector<Coll*> g_coll_pool;
std::vector<WarpSync> g_warps;
std::vector<AsyncOp> g_ops;
unsigned long long g_op_next = 1;
unsigned g_pred_waiters = 0;
uint32_t g_epoch = 1;
uint32_t g_block_epoch = 1;  // g_epoch when the running block started (older shadow records are another block's)
bool g_in_launch = false;
const char* g_kernel = "";
uint3 g_block{};
Fault g_fault;
cudaError_t g_last_error = cudaSuccess;
std::vector<Buffer> g_bufs;       // sorted by lo: Python's, cudaMalloc's, static data, this launch's parameters
size_t g_buf_cache = 0;
std::vector<Buffer> g_py_bufs, g_malloc_bufs, g_static_bufs;
unsigned g_malloc_count = 0;
std::unordered_map<uintptr_t, size_t> g_malloc_sizes;
char* g_win = nullptr;
Sh* g_shadow = nullptr;
size_t g_arena_used = 0;
std::vector<Slot> g_slots;
size_t g_dyn_size = 0;
uintptr_t g_touch_lo = ~(uintptr_t)0, g_touch_hi = 0;
bool g_racecheck = true;
uint64_t g_seed = 0x5eed, g_launch_idx = 0, g_rng = 1;
long long g_clock = 0;
long long g_optin_max = -1;  // largest MaxDynamicSharedMemorySize any kernel was given (host mode)
std::unordered_map<const void*, long long> g_func_optin;
std::vector<Loc> g_locs;  // interned Locs for accesses without a PC
unsigned g_spin = 0;
struct Stats {
  unsigned long long launches, blocks, threads, switches, slow_global, slow_shared, barriers, collectives;
} g_stats;

// ------------------------------------------------------------------------------------------------ small helpers
inline uint64_t rng() {  // xorshift64*
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 2685821657736338717ull;
}
uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
const char* base_name(const char* p) {
  if (!p) return "?";
  const char* s = strrchr(p, '/');
  return s ? s + 1 : p;
}
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
inline bool in_fiber() { return g_cur != &g_main; }
inline unsigned warp_of(unsigned t) { return t >> 5; }
inline unsigned lane_bit(unsigned t) { return 1u << (t & 31); }
uint3 tid3(unsigned t) {
  return uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
}
std::string agent_name(unsigned id);  // wbcpu_ptx90.cpp: "the TMA unit (mbarrier full+0x8)"
std::string thread_str(unsigned t) {
  if (t >= g_nthreads) return agent_name(t);
  const uint3 v = tid3(t);
  return fmt("(%u,%u,%u)", v.x, v.y, v.z);
}
std::string who() {  // "in KERNEL block (x,y,z) thread (x,y,z)"
  if (!in_fiber()) return fmt("in %s (host code)", g_kernel);
  return fmt("in %s block (%u,%u,%u) thread %s", g_kernel, g_block.x, g_block.y, g_block.z,
             thread_str(g_cur->ltid).c_str());
}
std::string loc_str(Loc l) { return fmt("%s:%d", base_name(l.file), l.line); }

// ---- symbolisation (only when reporting): addr2line on the library that holds the PC
std::unordered_map<uintptr_t, std::string> g_sym_cache;
std::string symbolize(uintptr_t pc) {
  auto it = g_sym_cache.find(pc);
  if (it != g_sym_cache.end()) return it->second;
  std::string out = fmt("pc 0x%lx", (unsigned long)pc);
  Dl_info info;
  if (pc && dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fname) {
    const uintptr_t off = pc - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1;  // inside the call instruction
    std::string cmd = fmt("addr2line -f -i -C -e '%s' 0x%lx 2>/dev/null", info.dli_fname, (unsigned long)off);
    if (FILE* p = popen(cmd.c_str(), "r")) {
      std::vector<std::pair<std::string, std::string>> frames;  // (function, file:line), innermost first
      char fn[4096], fl[4096];
      while (fgets(fn, sizeof fn, p) && fgets(fl, sizeof fl, p)) {
        fn[strcspn(fn, "\n")] = 0;
        fl[strcspn(fl, "\n")] = 0;
        char* d = strstr(fl, " (discriminator");
        if (d) *d = 0;
        frames.emplace_back(fn, fl);
      }
      pclose(p);
      std::string pick, outer;
      for (auto& f : frames) {  // the innermost frame in the user's code (not these headers, not the system's)
        if (f.second.find("/interp/include/") != std::string::npos || f.second.rfind("/usr/", 0) == 0 ||
            f.second.rfind("??", 0) == 0)
          continue;
        if (pick.empty()) pick = base_name(f.second.c_str());
        outer = base_name(f.second.c_str());
      }
      if (!pick.empty()) out = pick == outer ? pick : pick + " via " + outer;
    }
  }
  g_sym_cache[pc] = out;
  return out;
}
constexpr uint64_t LOC_TAG = 1ull << 63;
struct LocKey {
  size_t operator()(const std::pair<const char*, int>& k) const {
    return std::hash<const void*>()(k.first) ^ ((size_t)k.second * 0x9e3779b97f4a7c15ull);
  }
};
std::unordered_map<std::pair<const char*, int>, uint64_t, LocKey> g_loc_ids;
uint64_t intern(Loc l) {  // a Loc as a 64-bit "where" (the racecheck shadow stores one per byte)
  auto it = g_loc_ids.find({l.file, l.line});
  if (it != g_loc_ids.end()) return it->second;
  g_locs.push_back(l);
  const uint64_t id = LOC_TAG | (g_locs.size() - 1);
  g_loc_ids[{l.file, l.line}] = id;
  return id;
}
std::string where_str(uint64_t w) {
  if (w & LOC_TAG) {
    const size_t i = (size_t)(w & ~LOC_TAG);
    return i < g_locs.size() ? loc_str(g_locs[i]) : "?";
  }
  return symbolize((uintptr_t)w);
}

// ---- faults
cudaError_t fault_code(int kind) {
  switch (kind) {
    case FAULT_MEMCHECK: return cudaErrorIllegalAddress;
    case FAULT_ASSERT: return cudaErrorAssert;
    case FAULT_NOT_INTERPRETED: return cudaErrorNotSupported;
    case FAULT_LAUNCH: return cudaErrorInvalidConfiguration;
    default: return cudaErrorLaunchFailure;
  }
}
const char* kind_name(int kind) {
  switch (kind) {
    case FAULT_MEMCHECK: return "memcheck";
    case FAULT_RACECHECK: return "racecheck";
    case FAULT_SYNCCHECK: return "synccheck";
    case FAULT_TRAP: return "trap";
    case FAULT_ASSERT: return "assert";
    case FAULT_NOT_INTERPRETED: return "not interpreted";
    case FAULT_LAUNCH: return "launch";
    default: return "error";
  }
}
void switch_to(Fiber* to);
void set_fault(int kind, const std::string& msg, cudaError_t code = cudaSuccess) {
  if (g_fault.kind != FAULT_NONE) return;  // the first fault of a call is the one reported
  g_fault.kind = kind;
  g_fault.code = code != cudaSuccess ? code : fault_code(kind);
  g_fault.msg = kind == FAULT_NOT_INTERPRETED ? msg : std::string(kind_name(kind)) + ": " + msg;
  g_last_error = (cudaError_t)g_fault.code;
}
[[noreturn]] void raise_fault(int kind, std::string msg, cudaError_t code = cudaSuccess) {
  set_fault(kind, msg, code);
  if (in_fiber()) {
    switch_to(&g_main);  // the faulting fiber is abandoned: its stack is reset before it runs again
    __builtin_unreachable();
  }
  throw std::runtime_error(g_fault.msg);
}

// ------------------------------------------------------------------------------------------------ buffers
void rebuild_buffers(const Buffer* extra) {
  g_bufs.clear();
  for (auto* v : {&g_py_bufs, &g_malloc_bufs, &g_static_bufs})
    for (auto& b : *v) g_bufs.push_back(b);
  if (extra) g_bufs.push_back(*extra);
  std::sort(g_bufs.begin(), g_bufs.end(), [](const Buffer& a, const Buffer& b) { return a.lo < b.lo; });
  g_buf_cache = 0;
}
int phdr_cb(struct dl_phdr_info* info, size_t, void* data) {
  const uintptr_t me = reinterpret_cast<uintptr_t>(data);
  bool mine = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && me >= info->dlpi_addr + ph.p_vaddr && me < info->dlpi_addr + ph.p_vaddr + ph.p_memsz)
      mine = true;
  }
  if (!mine) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && !(ph.p_flags & PF_X))
      g_static_bufs.push_back(Buffer{info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz,
                                     "the library's static data"});
  }
  return 1;
}
void init_once();

// nearest buffer to an address, for messages: "C+65536 (C is 65536 bytes)"
std::string describe_global(uintptr_t a) {
  if (a < 4096) return fmt("address 0x%lx (a null pointer)", (unsigned long)a);
  const Buffer* best = nullptr;
  uintptr_t dist = ~(uintptr_t)0;
  for (auto& b : g_bufs) {
    if (b.name == "the library's static data") continue;
    const uintptr_t d = a < b.lo ? b.lo - a : (a >= b.hi ? a - b.hi + 1 : 0);
    if (d < dist) dist = d, best = &b;
  }
  for (auto& f : g_fibers)
    if (f.stack_lo && a >= (uintptr_t)f.stack_lo && a < (uintptr_t)f.stack_lo + f.stack_size)
      return fmt("0x%lx, the local memory of thread %s (a pointer to another thread's local variable)",
                 (unsigned long)a, thread_str(f.ltid).c_str());
  if (!best || dist > (64u << 20))
    return fmt("0x%lx (no buffer near it: not device memory; a host pointer?)", (unsigned long)a);
  const long long off = (long long)(a - best->lo);
  return fmt("%s%s%lld (%s is %llu bytes)", best->name.c_str(), off >= 0 ? "+" : "", off, best->name.c_str(),
             (unsigned long long)(best->hi - best->lo));
}

// ------------------------------------------------------------------------------------------------ shared window
void ensure_window() {
  if (g_win) return;
  void* w = mmap(nullptr, WIN_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void* s = mmap(nullptr, WIN_SIZE * sizeof(Sh), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (w == MAP_FAILED || s == MAP_FAILED) {
    fprintf(stderr, "wb-interp: cannot map the shared-memory window\n");
    abort();
  }
  g_win = static_cast<char*>(w);
  g_shadow = static_cast<Sh*>(s);
}
const Slot* find_slot(uintptr_t a) {
  auto it = std::upper_bound(g_slots.begin(), g_slots.end(), a, [](uintptr_t x, const Slot& s) { return x < s.lo; });
  if (it == g_slots.begin()) return nullptr;
  --it;
  return &*it;
}
std::string describe_shared(uintptr_t a, const char** name_out = nullptr) {
  const uintptr_t dyn = (uintptr_t)g_win;
  if (a < dyn + DYN_MAX) {
    if (name_out) *name_out = "dynamic shared memory";
    return fmt("dynamic shared memory+%lu (the launch gave %zu bytes)", (unsigned long)(a - dyn), g_dyn_size);
  }
  const Slot* s = find_slot(a);  // the slot at or before a, or the next one if that is nearer
  const Slot* next = s ? (s + 1 < g_slots.data() + g_slots.size() ? s + 1 : nullptr)
                       : (g_slots.empty() ? nullptr : g_slots.data());
  if (!s || (next && a >= s->hi && next->lo - a < a - s->hi + 1)) s = next;
  if (!s) return fmt("shared window+%lu", (unsigned long)(a - dyn));
  if (name_out) *name_out = s->name;
  const long long off = (long long)(a - s->lo);
  return fmt("%s%s%lld (%s is %llu bytes, %s:%d)", s->name, off >= 0 ? "+" : "", off, s->name,
             (unsigned long long)(s->hi - s->lo), base_name(s->file), s->line);
}
std::string shared_name(uintptr_t a) {  // for race messages: "As+0x40"
  const uintptr_t dyn = (uintptr_t)g_win;
  if (a < dyn + DYN_MAX) return fmt("dynamic shared+0x%lx", (unsigned long)(a - dyn));
  const Slot* s = find_slot(a);
  if (s && a < s->hi) return fmt("%s+0x%lx", s->name, (unsigned long)(a - s->lo));
  return fmt("shared+0x%lx", (unsigned long)(a - dyn));
}

// ------------------------------------------------------------------------------------------------ scheduling
void fiber_main(void*);
void init_fiber(Fiber& f) {
  char* top = f.stack_lo + f.stack_size;
  top = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(top) & ~(uintptr_t)15);
#if defined(__x86_64__)
  uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 8;
  uint32_t mx;
  asm volatile("stmxcsr %0" : "=m"(mx));
  sp[0] = (uint64_t)mx | ((uint64_t)0x37f << 32);  // mxcsr, x87 control word
  sp[1] = 0;                                        // r15
  sp[2] = 0;                                        // r14
  sp[3] = 0;                                        // r13: argument
  sp[4] = reinterpret_cast<uint64_t>(&fiber_main);  // r12: entry
  sp[5] = 0;                                        // rbx
  sp[6] = 0;                                        // rbp
  sp[7] = reinterpret_cast<uint64_t>(&wb_ctx_start);
  f.sp = sp;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack_lo;
  f.uc.uc_stack.ss_size = f.stack_size;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, reinterpret_cast<void (*)()>(&fiber_main), 1, nullptr);
#endif
}
void switch_to(Fiber* to) {
  Fiber* from = g_cur;
  if (from == to) return;
  ++g_stats.switches;
  g_cur = to;
  g_spin = 0;
  if (to == &g_main) {
    g_fast_lo = g_stack_lo = 0;
    g_fast_size = g_stack_size = ~(uintptr_t)0;
  } else {
    g_fast_lo = g_stack_lo = reinterpret_cast<uintptr_t>(to->stack_lo);
    g_fast_size = g_stack_size = to->stack_size;
    threadIdx = to->tid;
    to->state = T_RUNNING;
  }
#if defined(__x86_64__)
  wb_ctx_swap(&from->sp, to->sp);
#else
  swapcontext(&from->uc, &to->uc);
#endif
}
void maybe_land_async();
// The calling fiber has blocked or exited: run another runnable one (picked at random), else the scheduler.
void schedule_next() {
  maybe_land_async();
  if (!g_runnable.empty()) {
    const size_t i = (size_t)(rng() % g_runnable.size());
    const unsigned t = g_runnable[i];
    g_runnable[i] = g_runnable.back();
    g_runnable.pop_back();
    switch_to(&g_fibers[t]);
  } else {
    switch_to(&g_main);
  }
}
void make_runnable(Fiber& f) {
  f.state = T_RUNNABLE;
  g_runnable.push_back(f.ltid);
}
void yield_running() {  // preempt the running fiber (spin loops on shared flags, __nanosleep)
  if (!in_fiber()) return;
  make_runnable(*g_cur);
  schedule_next();
}

// Model code (a rendezvous callback, a wait predicate) runs with the instrumentation hooks off: it reads other lanes'
// blobs and its own bookkeeping. Accesses it makes on a thread's behalf go through check_access, which stays on.
struct Unchecked {
  uintptr_t lo = g_fast_lo, size = g_fast_size;
  Unchecked() {
    g_fast_lo = 0;
    g_fast_size = ~(uintptr_t)0;
  }
  ~Unchecked() {
    g_fast_lo = lo;
    g_fast_size = size;
  }
};

// ------------------------------------------------------------------------------------------------ warps (racecheck)
void record_sync(unsigned warp, uint32_t lanes) {
  WarpSync& w = g_warps[warp];
  w.ring[w.gen & 63] = lanes;
  ++w.gen;
}
bool warp_synced(unsigned warp, uint32_t need, uint32_t since) {
  const WarpSync& w = g_warps[warp];
  if (w.gen - since > 64) return true;  // older than the ring: assume ordered (no false reports)
  for (uint32_t s = since; s != w.gen; ++s)
    if ((w.ring[s & 63] & need) == need) return true;
  return false;
}
inline bool ordered(unsigned t_prev, uint32_t ep, uint32_t gen, unsigned t) {
  if (ep != g_epoch || t_prev == t) return true;
  if (warp_of(t_prev) != warp_of(t)) return false;
  return warp_synced(warp_of(t), lane_bit(t_prev) | lane_bit(t), gen);
}

// ------------------------------------------------------------------------------------------------ happens-before
// Vector clocks for synchronisation that is neither a barrier nor a warp collective: mbarrier phases (a completed
// phase observed by try_wait orders what the arrivers did before arriving, and the TMA bytes that completed it, before
// the waiter's next accesses), and asynchronous agents (the TMA unit of an mbarrier, the tensor core of a warpgroup)
// that read and write shared memory on their own clock. Every thread (and agent) has a scalar clock g_clk[id],
// always kept (accesses are stamped with it, 4 bytes in the shadow); the clock matrix g_vc (row id: what id knows of
// every other id's clock) exists only in blocks that use an mbarrier, TMA or wgmma (hb_enable), so other kernels pay
// one load per access. A write stamped (u, c) is ordered before thread t's access when g_vc[t][u] >= c.
// Agents: the tensor core of each warpgroup (its wgmma operations read shared memory on their own clock), then one TMA
// unit per mbarrier.
constexpr unsigned HB_WG_AGENTS = 8, HB_AGENTS = 128;  // 8 warpgroups, then up to 120 mbarriers
unsigned g_hb_w = 0;                                   // ids: threads (rounded up to a warp), then agents
bool g_hb_on = false;
std::vector<uint32_t> g_clk, g_vc, g_hb_tmp;
inline uint32_t* hb_row(unsigned id) { return g_vc.data() + (size_t)id * g_hb_w; }
inline uint32_t hb_stamp(unsigned id) { return g_clk[id]; }
inline bool hb_knows(unsigned t, unsigned u, uint32_t c) { return g_hb_on && (u == t || hb_row(t)[u] >= c); }
void hb_enable() {
  if (g_hb_on) return;
  g_vc.assign((size_t)g_hb_w * g_hb_w, 0);
  g_hb_on = true;
}
void hb_join(uint32_t* dst, const uint32_t* src) {
  for (unsigned i = 0; i < g_hb_w; ++i) dst[i] = std::max(dst[i], src[i]);
}
void hb_release(unsigned id, uint32_t* obj) {  // obj |= what id knows, id's own clock included; id's clock ticks
  hb_join(obj, hb_row(id));
  obj[id] = std::max(obj[id], g_clk[id]);
  ++g_clk[id];
}
void hb_acquire(unsigned id, const uint32_t* obj) { hb_join(hb_row(id), obj); }
void hb_barrier() {  // __syncthreads: everyone learns what anyone knew (cumulativity), then ticks
  if (!g_hb_on) return;
  g_hb_tmp.assign(g_hb_w, 0);
  for (unsigned t = 0; t < g_nthreads; ++t) {
    hb_join(g_hb_tmp.data(), hb_row(t));
    g_hb_tmp[t] = std::max(g_hb_tmp[t], g_clk[t]);
  }
  for (unsigned t = 0; t < g_nthreads; ++t) {
    memcpy(hb_row(t), g_hb_tmp.data(), g_hb_w * sizeof(uint32_t));
    ++g_clk[t];
  }
}
void hb_warp_sync(unsigned first, uint32_t lanes) {  // a completed warp collective (.sync): the lanes it names
  if (!g_hb_on) return;
  g_hb_tmp.assign(g_hb_w, 0);
  for (unsigned l = 0; l < 32; ++l)
    if ((lanes >> l) & 1) {
      hb_join(g_hb_tmp.data(), hb_row(first + l));
      g_hb_tmp[first + l] = std::max(g_hb_tmp[first + l], g_clk[first + l]);
    }
  for (unsigned l = 0; l < 32; ++l)
    if ((lanes >> l) & 1) {
      memcpy(hb_row(first + l), g_hb_tmp.data(), g_hb_w * sizeof(uint32_t));
      ++g_clk[first + l];
    }
}

// ------------------------------------------------------------------------------------------------ memory checks
[[noreturn]] void race(const char* what, uintptr_t a, unsigned other, uint64_t other_where, uint64_t here) {
  raise_fault(FAULT_RACECHECK,
              fmt("shared-memory race (%s) on %s in %s block (%u,%u,%u) between %s%s at %s and thread %s at %s",
                  what, shared_name(a).c_str(), g_kernel, g_block.x, g_block.y, g_block.z,
                  other != NO_TID && other >= g_nthreads ? "" : "thread ",  // an agent: "the TMA unit (...)"
                  other == NO_TID ? "?" : thread_str(other).c_str(),
                  other_where ? where_str(other_where).c_str() : "an earlier access", thread_str(g_cur->ltid).c_str(),
                  where_str(here).c_str()));
}
inline bool unordered_write(const Sh* e, unsigned t) {  // the last write to this byte is not ordered before t
  if (e->wtid == t) return false;
  if (e->flags & SH_AGENT) return e->wep >= g_block_epoch && !hb_knows(t, e->wtid, e->wclk);
  return e->wep == g_epoch && !ordered(e->wtid, e->wep, e->wgen, t) && !hb_knows(t, e->wtid, e->wclk);
}
inline bool readers_known(const Sh* e, unsigned t) {  // every read of this epoch is ordered before t by hb
  return !(e->flags & SH_MANY) && (e->rtid == t || hb_knows(t, e->rtid, e->rclk)) &&
         (e->rtid2 == NO_TID || e->rtid2 == t || hb_knows(t, e->rtid2, e->rclk2));
}
void shadow_access(uintptr_t a, size_t n, int kind, uint64_t here) {
  const unsigned t = g_cur->ltid, warp = warp_of(t);
  const uint32_t gen = g_warps[warp].gen, bit = lane_bit(t), clk = hb_stamp(t);
  Sh* e = g_shadow + (a - (uintptr_t)g_win);
  for (size_t i = 0; i < n; ++i, ++e) {
    if (e->flags & SH_ASYNC) {
      if (kind == 2) continue;
      race(kind == 0 ? "read before the cp.async wait" : "write to bytes an in-flight async copy writes", a + i,
           e->wtid, e->wpc, here);
    }
    if (kind == 0) {
      if (unordered_write(e, t)) race("read-after-write", a + i, e->wtid, e->wpc, here);
      if (e->rep != g_epoch) {
        e->rep = g_epoch;
        e->rtid = (uint16_t)t;
        e->rtid2 = NO_TID;
        e->rpc = here;
        e->rgen = gen;
        e->rwarp = (uint16_t)warp;
        e->rlanes = bit;
        e->rclk = clk;
        e->flags &= (uint16_t)~SH_MANY;
      } else {
        if (e->rwarp != warp) e->rwarp = MULTI_WARP;
        else e->rlanes |= bit;
        if (e->rtid == t) {
          e->rclk = clk;
        } else {
          if (e->rtid2 != NO_TID && e->rtid2 != t) e->flags |= SH_MANY;
          e->rtid2 = (uint16_t)t;
          e->rclk2 = clk;
        }
      }
    } else if (kind == 1) {
      if (unordered_write(e, t)) race("write-after-write", a + i, e->wtid, e->wpc, here);
      if (e->rep == g_epoch) {
        bool bad;
        unsigned other = e->rtid != t ? e->rtid : e->rtid2;
        uint64_t ow = e->rtid != t ? e->rpc : 0;
        if (e->rwarp == MULTI_WARP) {
          bad = true;
          if (other != NO_TID && warp_of(other) == warp && e->rtid2 != NO_TID && warp_of(e->rtid) == warp) other = NO_TID;
        } else if (e->rwarp != warp) {
          bad = true;
        } else {
          const uint32_t need = e->rlanes | bit;
          bad = need != bit && !warp_synced(warp, need, e->rgen);
        }
        if (bad && !readers_known(e, t)) race("write-after-read", a + i, other, ow, here);
      }
      e->wep = g_epoch;
      e->wtid = (uint16_t)t;
      e->wgen = gen;
      e->wpc = here;
      e->rep = 0;
      e->wclk = clk;
      e->flags = 0;
    }
  }
}
void spin_check() {  // hooks only (never inside an atomic): a fiber polling memory another thread writes
  if (in_fiber() && ++g_spin >= 65536) yield_running();
}
[[noreturn]] void bad_access(const char* what, uintptr_t a, size_t n, int kind, uint64_t here, bool shared) {
  const char* op = kind == 0 ? "read" : (kind == 1 ? "write" : "atomic");
  raise_fault(FAULT_MEMCHECK, fmt("%s %s of %zu bytes at %s %s at %s", what, op, n,
                                  shared ? describe_shared(a).c_str() : describe_global(a).c_str(), who().c_str(),
                                  where_str(here).c_str()));
}
void check_slow(uintptr_t a, size_t n, int kind, uint64_t here) {
  if (!in_fiber()) return;
  if (a - (uintptr_t)g_win < WIN_SIZE) {
    ++g_stats.slow_shared;
    const uintptr_t dyn = (uintptr_t)g_win;
    if (a < dyn + DYN_MAX) {
      if (a + n > dyn + g_dyn_size)
        bad_access("out-of-bounds shared", a, n, kind, here, true);
    } else {
      const Slot* s = find_slot(a);
      if (!s || a < s->lo || a + n > s->hi) bad_access("out-of-bounds shared", a, n, kind, here, true);
    }
    if (a < g_touch_lo) g_touch_lo = a;
    if (a + n > g_touch_hi) g_touch_hi = a + n;
    if (g_racecheck) shadow_access(a, n, kind, here);
    return;
  }
  ++g_stats.slow_global;
  const size_t nb = g_bufs.size();
  if (g_buf_cache < nb && a >= g_bufs[g_buf_cache].lo && a + n <= g_bufs[g_buf_cache].hi) return;
  size_t lo = 0, hi = nb;
  while (lo < hi) {  // last buffer with lo <= a
    const size_t mid = (lo + hi) / 2;
    if (g_bufs[mid].lo <= a) lo = mid + 1;
    else hi = mid;
  }
  // buffers may nest (a view inside a registered storage): scan back a little
  for (size_t i = lo; i-- > 0 && lo - i <= 4;) {
    if (a >= g_bufs[i].lo && a + n <= g_bufs[i].hi) {
      g_buf_cache = i;
      return;
    }
  }
  bad_access("out-of-bounds", a, n, kind, here, false);
}

// ------------------------------------------------------------------------------------------------ async copies
void land(AsyncOp& op) {
  if (op.landed) return;
  if (op.src_n) memcpy(op.dst, op.src, op.src_n);
  if (op.n > op.src_n) memset(op.dst + op.src_n, 0, op.n - op.src_n);
  op.landed = true;
  if (op.on_done) op.on_done(op.user);
}
void retire(AsyncOp& op) {
  land(op);
  if (g_racecheck) {
    const WarpSync& w = g_warps[warp_of(op.owner)];
    Sh* e = g_shadow + ((uintptr_t)op.dst - (uintptr_t)g_win);
    for (size_t i = 0; i < op.n; ++i, ++e) {
      e->flags = 0;
      e->wep = g_epoch;
      e->wtid = (uint16_t)op.owner;
      e->wgen = w.gen;
      e->wpc = op.where;
      e->rep = 0;
      e->wclk = g_clk[op.owner];
    }
  }
}
void erase_ops(const std::vector<size_t>& idx) {
  for (size_t k = idx.size(); k-- > 0;) g_ops.erase(g_ops.begin() + (long)idx[k]);
}
bool ptx90_land(bool all);  // wbcpu_ptx90.cpp: TMA copies in flight (one at random, or all)
void ptx90_block_begin();
void ptx90_thread_exit(unsigned t);
void maybe_land_async() {
  if (!(rng() & 7)) ptx90_land(false);
  if (g_ops.empty() || (rng() & 7)) return;
  AsyncOp& op = g_ops[rng() % g_ops.size()];
  land(op);
}
void retire_thread_ops(unsigned t) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < g_ops.size(); ++i)
    if (g_ops[i].owner == t) retire(g_ops[i]), idx.push_back(i);
  erase_ops(idx);
}

// ------------------------------------------------------------------------------------------------ barrier
bool same_site(Loc a, Loc b) { return a.line == b.line && (a.file == b.file || !strcmp(a.file, b.file)); }
void complete_barrier() {
  ++g_stats.barriers;
  ++g_epoch;
  hb_barrier();
  for (unsigned t : g_bar_waiters) {  // bar_result holds the op until now: 1 count, 2 and, 3 or
    Fiber& f = g_fibers[t];
    const int op = f.bar_result;
    f.bar_result = op == 1 ? g_bar_acc[0] : op == 2 ? g_bar_acc[1] : op == 3 ? g_bar_acc[2] : 0;
    make_runnable(f);
  }
  g_bar_waiters.clear();
}
void thread_exit_checks(unsigned t);

// ------------------------------------------------------------------------------------------------ collectives
Coll* new_coll() {
  if (g_coll_pool.empty()) return new Coll();
  Coll* c = g_coll_pool.back();
  g_coll_pool.pop_back();
  return c;
}
std::string mask_str(const Coll& c) {
  if (c.lanes == 32) return fmt("0x%08x", (unsigned)c.mask[0]);
  return fmt("0x%016llx%016llx", c.mask[1], c.mask[0]);
}
inline bool bit_of(const unsigned long long* m, unsigned i) { return (m[i >> 6] >> (i & 63)) & 1ull; }
std::string wait_desc(const Fiber& f) {
  switch (f.state) {
    case T_BARRIER: return "waits at __syncthreads (" + loc_str(f.wait_loc) + ")";
    case T_COLLECTIVE: return fmt("waits in %s (%s, mask %s)", f.coll->kind, loc_str(f.coll->loc).c_str(),
                                  mask_str(*f.coll).c_str());
    case T_PRED: return fmt("waits for %s (%s)", f.wait_what ? f.wait_what : "a condition", loc_str(f.wait_loc).c_str());
    case T_EXITED: return "has exited";
    default: return "is running";
  }
}
void rendezvous(int lanes, const unsigned long long* mask, const char* kind, const void* in, void* out,
                RendezvousFn fn, void* user, Loc loc) {
  if (!in_fiber()) raise_fault(FAULT_SYNCCHECK, fmt("%s called outside a kernel (%s)", kind, loc_str(loc).c_str()));
  ++g_stats.collectives;
  Fiber& f = *g_cur;
  const unsigned t = f.ltid, lane = t % lanes, group = t / lanes, base = group * lanes;
  if (!bit_of(mask, lane))
    raise_fault(FAULT_SYNCCHECK, fmt("%s at %s: the mask 0x%08llx does not name the calling lane %u %s", kind,
                                     loc_str(loc).c_str(), mask[0], lane, who().c_str()));
  Coll* c = nullptr;
  for (Coll* o : g_colls)
    if (o->lanes == lanes && o->group == group && o->kind == kind && o->mask[0] == mask[0] && o->mask[1] == mask[1] &&
        !bit_of(o->arrived, lane)) {
      c = o;
      break;
    }
  if (!c) {
    // every named lane must exist and be alive now; one that exits later is caught in thread_exit_checks
    for (unsigned i = 0; i < (unsigned)lanes; ++i) {
      if (!bit_of(mask, i)) continue;
      if (base + i >= g_nthreads)
        raise_fault(FAULT_SYNCCHECK, fmt("%s at %s: the mask names lane %u, which does not exist (the block has %u "
                                         "threads) %s", kind, loc_str(loc).c_str(), i, g_nthreads, who().c_str()));
      if (g_fibers[base + i].state == T_EXITED)
        raise_fault(FAULT_SYNCCHECK, fmt("%s at %s: the mask 0x%08llx names lane %u (thread %s), which has exited %s",
                                         kind, loc_str(loc).c_str(), mask[0], i, thread_str(base + i).c_str(),
                                         who().c_str()));
    }
    c = new_coll();
    c->lanes = lanes;
    c->group = group;
    c->kind = kind;
    c->mask[0] = mask[0];
    c->mask[1] = mask[1];
    c->arrived[0] = c->arrived[1] = 0;
    c->r.lanes = lanes;
    c->r.mask[0] = mask[0];
    c->r.mask[1] = mask[1];
    c->r.user = user;
    for (int i = 0; i < lanes; ++i) c->r.in[i] = nullptr, c->r.out[i] = nullptr;
    c->fn = fn;
    c->loc = loc;
    c->first = &f;
    g_colls.push_back(c);
  }
  c->arrived[lane >> 6] |= 1ull << (lane & 63);
  c->r.in[lane] = in;
  c->r.out[lane] = out;
  if (c->arrived[0] == c->mask[0] && c->arrived[1] == c->mask[1]) {
    if (c->fn) {
      Unchecked quiet;
      c->fn(c->r);
    }
    for (unsigned w = 0; w < (unsigned)lanes / 32; ++w) {
      const uint32_t m = (uint32_t)(c->mask[w / 2] >> (32 * (w % 2)));
      if (m) record_sync(base / 32 + w, m), hb_warp_sync(base + 32 * w, m);
    }
    for (unsigned i = 0; i < (unsigned)lanes; ++i)
      if (i != lane && bit_of(c->mask, i)) {
        g_fibers[base + i].coll = nullptr;
        make_runnable(g_fibers[base + i]);
      }
    g_colls.erase(std::find(g_colls.begin(), g_colls.end(), c));
    g_coll_pool.push_back(c);
    return;
  }
  f.state = T_COLLECTIVE;
  f.coll = c;
  schedule_next();
}

// ------------------------------------------------------------------------------------------------ thread lifecycle
void thread_exit_checks(unsigned t) {
  for (Coll* c : g_colls) {
    const unsigned lane = t % c->lanes;
    if (t / c->lanes == c->group && bit_of(c->mask, lane) && !bit_of(c->arrived, lane))
      raise_fault(FAULT_SYNCCHECK,  // worded as when the collective meets an already exited lane
                  fmt("%s at %s: the mask %s names lane %u (thread %s), which has exited in %s block (%u,%u,%u) "
                      "thread %s", c->kind, loc_str(c->loc).c_str(), mask_str(*c).c_str(), lane,
                      thread_str(t).c_str(), g_kernel, g_block.x, g_block.y, g_block.z,
                      thread_str(c->first->ltid).c_str()));
  }
}
struct LaunchState {
  Thunk thunk;
  void* ctx;
} g_ls;
void fiber_main(void*) {
  g_ls.thunk(g_ls.ctx);
  Fiber& f = *g_cur;
  retire_thread_ops(f.ltid);
  ptx90_thread_exit(f.ltid);
  thread_exit_checks(f.ltid);
  f.state = T_EXITED;
  --g_live;
  if (!g_bar_waiters.empty() && g_bar_waiters.size() == g_live) complete_barrier();
  schedule_next();
  __builtin_trap();
}

// A wait_until predicate is the model's own read of its state (an mbarrier's phase): evaluated with the checks off.
bool eval_pred(bool (*pred)(void*), void* arg) {
  Unchecked quiet;
  return pred(arg);
}

// ------------------------------------------------------------------------------------------------ deadlock
bool make_progress() {
  bool any = false;
  for (auto& op : g_ops)
    if (!op.landed) land(op), any = true;
  if (ptx90_land(true)) any = true;
  if (g_pred_waiters) {
    for (auto& f : g_fibers) {
      if (f.state == T_PRED && eval_pred(f.pred, f.pred_arg)) {
        --g_pred_waiters;
        make_runnable(f);
        any = true;
      }
    }
  }
  return any || !g_runnable.empty();
}
void deadlock() {
  std::string msg = fmt("deadlock in %s block (%u,%u,%u): ", g_kernel, g_block.x, g_block.y, g_block.z);
  // the first blocked collective and a lane it waits for
  for (Coll* c : g_colls) {
    for (unsigned i = 0; i < (unsigned)c->lanes; ++i) {
      if (bit_of(c->mask, i) && !bit_of(c->arrived, i)) {
        const unsigned t = c->group * c->lanes + i;
        msg += fmt("%s at %s (mask %s) waits for lane %u (thread %s), which %s", c->kind, loc_str(c->loc).c_str(),
                   mask_str(*c).c_str(), i, thread_str(t).c_str(), wait_desc(g_fibers[t]).c_str());
        return set_fault(FAULT_SYNCCHECK, msg);
      }
    }
  }
  if (!g_bar_waiters.empty()) {
    for (auto& f : g_fibers)
      if (f.state != T_EXITED && f.state != T_BARRIER) {
        msg += fmt("__syncthreads at %s waits for %u of %u live threads; thread %s %s",
                   loc_str(g_bar_loc).c_str(), g_live - (unsigned)g_bar_waiters.size(), g_live,
                   thread_str(f.ltid).c_str(), wait_desc(f).c_str());
        return set_fault(FAULT_SYNCCHECK, msg);
      }
  }
  for (auto& f : g_fibers)
    if (f.state == T_PRED) {
      msg += fmt("thread %s %s and nothing left can make it true", thread_str(f.ltid).c_str(), wait_desc(f).c_str());
      return set_fault(FAULT_SYNCCHECK, msg);
    }
  set_fault(FAULT_SYNCCHECK, msg + "no thread can run");
}

// ------------------------------------------------------------------------------------------------ launch
void ensure_fibers(unsigned n) {
  const size_t per = g_stack_bytes + 4096;  // + guard page
  if (g_stacks_n < n || !g_stacks) {
    if (g_stacks) munmap(g_stacks, g_stacks_n * per);
    const unsigned m = std::max(n, 32u);
    void* p = mmap(nullptr, m * per, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      fprintf(stderr, "wb-interp: cannot map %u fiber stacks\n", m);
      abort();
    }
    g_stacks = static_cast<char*>(p);
    g_stacks_n = m;
    for (unsigned i = 0; i < m; ++i) mprotect(g_stacks + i * per, 4096, PROT_NONE);  // guard below each stack
  }
  g_fibers.resize(n);
  for (unsigned i = 0; i < n; ++i) {
    g_fibers[i].stack_lo = g_stacks + i * per + 4096;
    g_fibers[i].stack_size = g_stack_bytes;
  }
}
void run_block(uint3 bid) {
  ++g_stats.blocks;
  g_block = bid;
  blockIdx = bid;
  g_block_epoch = ++g_epoch;
  g_hb_w = (g_nthreads + 31) / 32 * 32 + HB_AGENTS;
  g_clk.assign(g_hb_w, 1);
  g_hb_on = false;
  ptx90_block_begin();  // before the window is re-poisoned: copies a faulted launch left in flight are dropped
  if (g_touch_hi > g_touch_lo) memset(reinterpret_cast<void*>(g_touch_lo), 0xff, g_touch_hi - g_touch_lo);
  g_touch_lo = ~(uintptr_t)0;
  g_touch_hi = 0;
  g_runnable.clear();
  g_bar_waiters.clear();
  g_colls.clear();
  for (auto& op : g_ops)  // left in flight by a launch that faulted: their bytes are no longer pending
    if (g_racecheck)
      for (size_t i = 0; i < op.n; ++i) g_shadow[(uintptr_t)op.dst - (uintptr_t)g_win + i].flags = 0;
  g_ops.clear();
  g_pred_waiters = 0;
  for (auto& w : g_warps) w.gen = 0;
  g_live = g_nthreads;
  for (unsigned t = 0; t < g_nthreads; ++t) {
    Fiber& f = g_fibers[t];
    f.ltid = t;
    f.tid = tid3(t);
    f.coll = nullptr;
    f.committed = 0;
    init_fiber(f);
    make_runnable(f);
  }
  g_stats.threads += g_nthreads;
  while (true) {
    if (!g_runnable.empty()) {
      const size_t i = (size_t)(rng() % g_runnable.size());
      const unsigned t = g_runnable[i];
      g_runnable[i] = g_runnable.back();
      g_runnable.pop_back();
      switch_to(&g_fibers[t]);  // back here when no fiber can run, or on a fault
    }
    if (g_fault.kind) return;
    if (g_runnable.empty()) {
      if (g_live == 0) break;
      if (!make_progress()) {
        deadlock();
        return;
      }
    }
  }
  for (auto& op : g_ops) retire(op);
  g_ops.clear();
}

}  // namespace

// ================================================================================================ public runtime API
bool in_kernel() { return in_fiber(); }
unsigned linear_tid() { return in_fiber() ? g_cur->ltid : 0; }
void trap(Loc loc) {
  raise_fault(FAULT_TRAP, fmt("__trap() %s at %s", who().c_str(), loc_str(loc).c_str()));
}
void assert_fail(const char* expr, const char* file, unsigned line, const char* func) {
  if (!in_fiber()) {
    fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, func, expr);
    abort();
  }
  raise_fault(FAULT_ASSERT, fmt("assertion `%s' failed %s at %s:%u", expr, who().c_str(), base_name(file), line));
}
void not_interpreted(const char* instruction, Loc loc) {
  std::string where = loc.line ? loc_str(loc) : symbolize((uintptr_t)__builtin_return_address(0));
  raise_fault(FAULT_NOT_INTERPRETED, fmt("needs %s (not interpreted) at %s in %s", instruction, where.c_str(),
                                         g_kernel));
}
void fault(int kind, const char* f, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  raise_fault(kind, std::string(buf) + " " + who());
}
int launch_error(const char* f, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  if (g_fault.kind == FAULT_NONE) {
    g_fault.kind = FAULT_LAUNCH;
    g_fault.code = cudaErrorInvalidValue;
    g_fault.msg = std::string("launch: ") + buf;
  }
  g_last_error = cudaErrorInvalidValue;
  return cudaErrorInvalidValue;
}

int syncthreads(Loc loc, int op, int pred) {
  if (!in_fiber()) return pred;
  Fiber& f = *g_cur;
  if (!g_bar_waiters.empty() && !same_site(g_bar_loc, loc))
    raise_fault(FAULT_SYNCCHECK,
                fmt("barrier divergence in %s block (%u,%u,%u): thread %s waits at __syncthreads (%s) while thread %s "
                    "arrives at another __syncthreads (%s)", g_kernel, g_block.x, g_block.y, g_block.z,
                    thread_str(g_bar_waiters[0]).c_str(), loc_str(g_bar_loc).c_str(), thread_str(f.ltid).c_str(),
                    loc_str(loc).c_str()));
  if (g_bar_waiters.empty()) {
    g_bar_loc = loc;
    g_bar_acc[0] = 0;
    g_bar_acc[1] = 1;
    g_bar_acc[2] = 0;
  }
  g_bar_acc[0] += pred;
  g_bar_acc[1] &= pred;
  g_bar_acc[2] |= pred;
  f.bar_result = op;
  f.wait_loc = loc;
  f.state = T_BARRIER;
  g_bar_waiters.push_back(f.ltid);
  if (g_bar_waiters.size() == g_live) complete_barrier();
  schedule_next();
  return f.bar_result;
}

void syncwarp(unsigned mask, Loc loc) {
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, "__syncwarp", nullptr, nullptr, nullptr, nullptr, loc);
}
namespace {
struct ShflIn {
  unsigned long long v;
  int mode, arg, width;
};
void shfl_fn(Rendezvous& r) {
  for (int lane = 0; lane < 32; ++lane) {
    if (!((r.mask[0] >> lane) & 1)) continue;
    const ShflIn& me = *static_cast<const ShflIn*>(r.in[lane]);
    const int w = me.width, segmask = (32 - w) & 31, c = me.mode == 1 ? 0 : 31;
    const int maxLane = (lane & segmask) | (c & ~segmask), minLane = lane & segmask;
    int j;
    bool p;
    switch (me.mode) {
      case 1: j = lane - me.arg; p = j >= maxLane; break;                       // up
      case 2: j = lane + me.arg; p = j <= maxLane; break;                       // down
      case 3: j = lane ^ me.arg; p = j <= maxLane; break;                       // xor (bfly)
      default: j = minLane | (me.arg & ~segmask & 31); p = j <= maxLane; break;  // idx
    }
    if (!p) j = lane;
    unsigned long long v;
    if (j >= 0 && j < 32 && ((r.mask[0] >> j) & 1)) v = static_cast<const ShflIn*>(r.in[j])->v;
    else v = ~0ull;  // the source lane is not in the mask: undefined on the GPU; poison here
    *static_cast<unsigned long long*>(r.out[lane]) = v;
  }
}
const char* shfl_names[4] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
}  // namespace
unsigned long long shfl(int mode, unsigned mask, unsigned long long v, int arg, int width, Loc loc) {
  if (width < 1 || width > 32 || (width & (width - 1)))
    raise_fault(FAULT_SYNCCHECK, fmt("%s at %s: width %d is not a power of two in 1..32 %s", shfl_names[mode & 3],
                                     loc_str(loc).c_str(), width, who().c_str()));
  ShflIn in{v, mode, arg, width};
  unsigned long long out = 0;
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, shfl_names[mode & 3], &in, &out, shfl_fn, nullptr, loc);
  return out;
}
namespace {
void vote_fn(Rendezvous& r) {
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (((r.mask[0] >> l) & 1) && *static_cast<const int*>(r.in[l])) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l)
    if ((r.mask[0] >> l) & 1) *static_cast<unsigned*>(r.out[l]) = ballot;
}
const char* vote_names[3] = {"__ballot_sync", "__any_sync", "__all_sync"};
}  // namespace
unsigned vote(int mode, unsigned mask, int pred, Loc loc) {
  unsigned out = 0;
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, vote_names[mode % 3], &pred, &out, vote_fn, nullptr, loc);
  if (mode == 0) return out;
  if (mode == 1) return out != 0;
  return out == mask;
}
unsigned activemask() {
  // No convergence model here: the lanes of the caller's warp that have not exited.
  if (!in_fiber()) return 1;
  const unsigned base = g_cur->ltid & ~31u;
  unsigned m = 0;
  for (unsigned i = 0; i < 32 && base + i < g_nthreads; ++i)
    if (g_fibers[base + i].state != T_EXITED) m |= 1u << i;
  return m;
}
namespace {
void match_fn(Rendezvous& r) {
  for (int l = 0; l < 32; ++l) {
    if (!((r.mask[0] >> l) & 1)) continue;
    const unsigned long long v = *static_cast<const unsigned long long*>(r.in[l]);
    unsigned m = 0;
    bool all = true;
    for (int o = 0; o < 32; ++o) {
      if (!((r.mask[0] >> o) & 1)) continue;
      if (*static_cast<const unsigned long long*>(r.in[o]) == v) m |= 1u << o;
      else all = false;
    }
    unsigned* out = static_cast<unsigned*>(r.out[l]);
    out[0] = m;
    out[1] = all;
  }
}
}  // namespace
unsigned match_any(unsigned mask, unsigned long long v, Loc loc) {
  unsigned out[2];
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, "__match_any_sync", &v, out, match_fn, nullptr, loc);
  return out[0];
}
unsigned match_all(unsigned mask, unsigned long long v, int* pred, Loc loc) {
  unsigned out[2];
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, "__match_all_sync", &v, out, match_fn, nullptr, loc);
  if (pred) *pred = out[1];
  return out[1] ? mask : 0;
}
namespace {
struct RedIn {
  unsigned v;
  int op, is_signed;
};
void reduce_fn(Rendezvous& r) {
  unsigned acc = 0;
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (!((r.mask[0] >> l) & 1)) continue;
    const RedIn& x = *static_cast<const RedIn*>(r.in[l]);
    if (first) { acc = x.v; first = false; continue; }
    switch (x.op) {
      case 0: acc += x.v; break;
      case 1: acc = x.is_signed ? (unsigned)std::min((int)acc, (int)x.v) : std::min(acc, x.v); break;
      case 2: acc = x.is_signed ? (unsigned)std::max((int)acc, (int)x.v) : std::max(acc, x.v); break;
      case 3: acc &= x.v; break;
      case 4: acc |= x.v; break;
      default: acc ^= x.v; break;
    }
  }
  for (int l = 0; l < 32; ++l)
    if ((r.mask[0] >> l) & 1) *static_cast<unsigned*>(r.out[l]) = acc;
}
const char* reduce_names[6] = {"__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_and_sync",
                               "__reduce_or_sync", "__reduce_xor_sync"};
}  // namespace
unsigned reduce(int op, unsigned mask, unsigned v, int is_signed, Loc loc) {
  RedIn in{v, op, is_signed};
  unsigned out = 0;
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, reduce_names[op % 6], &in, &out, reduce_fn, nullptr, loc);
  return out;
}
void nanosleep(unsigned) { yield_running(); }
long long clock64() { return g_clock += 4; }

void warp_rendezvous(unsigned mask, const char* kind, const void* in, void* out, RendezvousFn fn, void* user, Loc loc) {
  const unsigned long long m[2] = {mask, 0};
  rendezvous(32, m, kind, in, out, fn, user, loc);
}
void warpgroup_rendezvous(const unsigned long long (&mask)[2], const char* kind, const void* in, void* out,
                          RendezvousFn fn, void* user, Loc loc) {
  rendezvous(128, mask, kind, in, out, fn, user, loc);
}
void wait_until(bool (*pred)(void*), void* arg, const char* what, Loc loc) {
  if (eval_pred(pred, arg)) return;
  if (!in_fiber()) raise_fault(FAULT_SYNCCHECK, fmt("wait for %s outside a kernel", what));
  Fiber& f = *g_cur;
  f.state = T_PRED;
  f.pred = pred;
  f.pred_arg = arg;
  f.wait_what = what;
  f.wait_loc = loc;
  ++g_pred_waiters;
  schedule_next();
}
namespace {
unsigned long long async_copy_where(void* dst, const void* src, size_t n, size_t src_n, uint64_t here,
                                    void (*on_done)(void*), void* user) {
  if (!in_fiber()) raise_fault(FAULT_SYNCCHECK, fmt("async copy outside a kernel (%s)", where_str(here).c_str()));
  if (src_n) check_slow((uintptr_t)src, src_n, 0, here);
  const uintptr_t d = (uintptr_t)dst;
  if (d - (uintptr_t)g_win >= WIN_SIZE)
    raise_fault(FAULT_MEMCHECK, fmt("async copy destination %p is not shared memory %s at %s", dst, who().c_str(),
                                    where_str(here).c_str()));
  check_slow(d, n, 1, here);  // bounds, and the write-side race checks against plain accesses
  const unsigned t = g_cur->ltid;
  if (g_racecheck) {
    Sh* e = g_shadow + (d - (uintptr_t)g_win);
    for (size_t i = 0; i < n; ++i, ++e) {
      e->flags = SH_ASYNC;
      e->wtid = (uint16_t)t;
      e->wpc = here;
    }
  }
  const unsigned long long id = g_op_next++;
  g_ops.push_back(AsyncOp{id, t, static_cast<char*>(dst), static_cast<const char*>(src), n, src_n, -1, false, here,
                          on_done, user});
  return id;
}
}  // namespace
unsigned long long async_copy(void* dst, const void* src, size_t n, size_t src_n, Loc loc, void (*on_done)(void*),
                              void* user) {
  return async_copy_where(dst, src, n, src_n, intern(loc), on_done, user);
}
unsigned long long async_copy_at(void* dst, const void* src, size_t n, size_t src_n, const void* pc) {
  return async_copy_where(dst, src, n, src_n, (uint64_t)(uintptr_t)pc, nullptr, nullptr);
}
void async_commit() {
  if (!in_fiber()) return;
  Fiber& f = *g_cur;
  ++f.committed;
  for (auto& op : g_ops)
    if (op.owner == f.ltid && op.group < 0) op.group = f.committed;
}
void async_wait(int keep) {
  if (!in_fiber()) return;
  Fiber& f = *g_cur;
  std::vector<size_t> idx;
  for (size_t i = 0; i < g_ops.size(); ++i) {
    AsyncOp& op = g_ops[i];
    if (op.owner == f.ltid && op.group >= 0 && op.group <= (long)f.committed - keep) retire(op), idx.push_back(i);
  }
  erase_ops(idx);
}
void async_land(unsigned long long id) {
  for (auto& op : g_ops)
    if (op.id == id) land(op);
}
void async_retire(unsigned long long id) {
  for (size_t i = 0; i < g_ops.size(); ++i)
    if (g_ops[i].id == id) {
      retire(g_ops[i]);
      g_ops.erase(g_ops.begin() + (long)i);
      return;
    }
}
void check_access(const void* p, size_t n, int kind, Loc loc) {
  if (!in_fiber()) return;
  const uintptr_t a = (uintptr_t)p;
  if (a - g_stack_lo < g_stack_size) return;
  check_slow(a, n, kind, intern(loc));
}
void check_access_at(const void* p, size_t n, int kind, const void* pc) {
  if (!in_fiber()) return;
  const uintptr_t a = (uintptr_t)p;
  if (a - g_stack_lo < g_stack_size) return;
  check_slow(a, n, kind, (uint64_t)(uintptr_t)pc);
}
bool is_shared(const void* p) { return g_win && (uintptr_t)p - (uintptr_t)g_win < WIN_SIZE; }
size_t dyn_smem_size() { return g_dyn_size; }

void* dyn_smem() {
  ensure_window();
  return g_win;
}
char* smem_base() {
  ensure_window();
  return g_win;
}
size_t smem_slot(size_t size, size_t align, const char* name, const char* file, int line) {
  ensure_window();
  if (align < 16) align = 16;
  size_t off = DYN_MAX + GAP + g_arena_used + REDZONE;
  off = (off + align - 1) / align * align;
  if (off + size + REDZONE > WIN_SIZE) {
    fprintf(stderr, "wb-interp: static __shared__ variables exceed %zu MB\n", ARENA_MAX >> 20);
    abort();
  }
  g_arena_used = off + size - (DYN_MAX + GAP);
  const uintptr_t lo = (uintptr_t)g_win + off;
  memset(reinterpret_cast<void*>(lo), 0xff, size);  // shared memory starts as garbage, not zeros
  g_slots.push_back(Slot{lo, lo + size, name, file, line});
  std::sort(g_slots.begin(), g_slots.end(), [](const Slot& a, const Slot& b) { return a.lo < b.lo; });
  return off;
}

// ---- dry mode: each launch's name and geometry logged, nothing run (Python: InterpLibrary.dry())
bool g_dry = false;
struct DryLaunch {
  std::string name;
  unsigned grid[3], block[3];
  unsigned long long smem;
};
std::vector<DryLaunch> g_dry_log;
std::vector<std::pair<size_t, std::string>> g_dry_notes;  // (launches logged before it, what)
void dry_note(const char* what) {
  if (g_dry) g_dry_notes.emplace_back(g_dry_log.size(), what);
}

int launch(const LaunchCfg& cfg, const void* kfn, Thunk thunk, void* ctx, const void* params, size_t params_size,
           const char* name) {
  init_once();
  if (in_fiber())
    raise_fault(FAULT_NOT_INTERPRETED, fmt("needs a device-side launch of %s (dynamic parallelism; not interpreted) %s",
                                           name, who().c_str()));
  if (g_fault.kind) return g_fault.code;  // a sticky error: later launches fail as on the GPU
  if (g_dry) {  // dry mode: the geometry is the result; no thread runs (a kernel that would fault cannot)
    g_dry_log.push_back(DryLaunch{name ? name : "?", {cfg.grid.x, cfg.grid.y, cfg.grid.z},
                                  {cfg.block.x, cfg.block.y, cfg.block.z}, (unsigned long long)cfg.smem});
    return cudaSuccess;
  }
  const dim3 g = cfg.grid, b = cfg.block;
  const unsigned long long nt = (unsigned long long)b.x * b.y * b.z;
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || nt > 1024 || b.z > 64 || g.y > 65535 || g.z > 65535) {
    g_kernel = name;
    g_fault.kind = FAULT_LAUNCH;
    g_fault.code = cudaErrorInvalidConfiguration;
    g_fault.msg = fmt("launch: %s<<<(%u,%u,%u), (%u,%u,%u)>>>: invalid configuration (a block has 1..1024 threads, "
                      "blockDim.z <= 64, gridDim.y/z <= 65535, no dimension 0)", name, g.x, g.y, g.z, b.x, b.y, b.z);
    g_last_error = cudaErrorInvalidConfiguration;
    return g_last_error;
  }
  long long optin = cfg.max_dyn;
  if (optin < 0) {
    auto it = kfn ? g_func_optin.find(kfn) : g_func_optin.end();
    optin = it != g_func_optin.end() ? it->second : g_optin_max;
  }
  const long long limit = std::max(48LL * 1024, std::min(optin, 227LL * 1024));
  if ((long long)cfg.smem > limit) {
    g_kernel = name;
    return launch_error("%s: %zu bytes of dynamic shared memory exceed %lld%s", name, cfg.smem, limit,
                        limit == 48 * 1024 ? " (above 48 KB a kernel needs cudaFuncSetAttribute("
                                             "cudaFuncAttributeMaxDynamicSharedMemorySize))" : " (the opt-in limit)");
  }
  ++g_stats.launches;
  ensure_window();
  gridDim = g;
  blockDim = b;
  g_nthreads = (unsigned)nt;
  g_kernel = name;
  g_dyn_size = cfg.smem;
  memset(g_win, 0xff, cfg.smem);
  ensure_fibers(g_nthreads);
  g_warps.assign((g_nthreads + 31) / 32, WarpSync{});
  Buffer pb{(uintptr_t)params, (uintptr_t)params + params_size, "kernel parameters"};
  rebuild_buffers(&pb);
  g_rng = splitmix(g_seed ^ splitmix(++g_launch_idx)) | 1;
  g_ls = LaunchState{thunk, ctx};
  g_in_launch = true;
  const unsigned long long nb = (unsigned long long)g.x * g.y * g.z;
  // block order: a per-seed random permutation (a random affine map for grids too large to shuffle)
  std::vector<unsigned> order;
  unsigned long long mul = 1, add = 0;
  if (nb <= (1ull << 22)) {
    order.resize(nb);
    for (unsigned long long i = 0; i < nb; ++i) order[i] = (unsigned)i;
    for (unsigned long long i = nb; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  } else {
    do mul = rng() % nb | 1; while (std::__gcd(mul, nb) != 1);
    add = rng() % nb;
  }
  for (unsigned long long k = 0; k < nb && !g_fault.kind; ++k) {
    const unsigned long long i = order.empty() ? (mul * k + add) % nb : order[k];
    run_block(uint3{(unsigned)(i % g.x), (unsigned)((i / g.x) % g.y), (unsigned)(i / ((unsigned long long)g.x * g.y))});
  }
  g_in_launch = false;
  rebuild_buffers(nullptr);
  return g_fault.kind ? g_fault.code : cudaSuccess;
}

#define WB_ATOMIC_IMPL(T)                                                                             \
  T atomic_rmw(int op, T* p, T v, const void* pc) {                                                   \
    if (in_fiber() && (uintptr_t)p - g_fast_lo >= g_fast_size) {                                      \
      if ((uintptr_t)p % sizeof(T))                                                                   \
        raise_fault(FAULT_MEMCHECK, fmt("misaligned atomic on %zu bytes at %s %s at %s", sizeof(T),     \
                                        describe_global((uintptr_t)p).c_str(), who().c_str(),         \
                                        symbolize((uintptr_t)pc).c_str()));                           \
      check_slow((uintptr_t)p, sizeof(T), 2, (uint64_t)(uintptr_t)pc);                               \
    }                                                                                                 \
    const T old = *p;                                                                                 \
    T nv = old;                                                                                       \
    switch (op) {                                                                                     \
      case AOP_ADD: nv = (T)(old + v); break;                                                         \
      case AOP_SUB: nv = (T)(old - v); break;                                                         \
      case AOP_EXCH: nv = v; break;                                                                   \
      case AOP_MIN: nv = v < old ? v : old; break;                                                    \
      case AOP_MAX: nv = v > old ? v : old; break;                                                    \
      default: nv = atomic_bits(op, old, v); break;                                                   \
    }                                                                                                 \
    *p = nv;                                                                                          \
    return old;                                                                                       \
  }                                                                                                   \
  T atomic_cas(T* p, T cmp, T v, const void* pc) {                                                    \
    if (in_fiber() && (uintptr_t)p - g_fast_lo >= g_fast_size) {                                      \
      if ((uintptr_t)p % sizeof(T))                                                                   \
        raise_fault(FAULT_MEMCHECK, fmt("misaligned atomic on %zu bytes at %s %s at %s", sizeof(T),     \
                                        describe_global((uintptr_t)p).c_str(), who().c_str(),         \
                                        symbolize((uintptr_t)pc).c_str()));                           \
      check_slow((uintptr_t)p, sizeof(T), 2, (uint64_t)(uintptr_t)pc);                               \
    }                                                                                                 \
    const T old = *p;                                                                                 \
    if (memcmp(&old, &cmp, sizeof(T)) == 0) *p = v;                                                   \
    return old;                                                                                       \
  }
namespace {
template <class T> T atomic_bits(int op, T old, T v) {
  if constexpr (std::is_integral<T>::value) {
    switch (op) {
      case AOP_AND: return old & v;
      case AOP_OR: return old | v;
      case AOP_XOR: return old ^ v;
      case AOP_INC: return (T)((old >= v) ? 0 : old + 1);
      case AOP_DEC: return (T)((old == 0 || old > v) ? v : old - 1);
      default: return old;
    }
  } else {
    return old;
  }
}
}  // namespace
WB_ATOMIC_IMPL(int)
WB_ATOMIC_IMPL(unsigned)
WB_ATOMIC_IMPL(unsigned long long)
WB_ATOMIC_IMPL(long long)
WB_ATOMIC_IMPL(float)
WB_ATOMIC_IMPL(double)
WB_ATOMIC_IMPL(unsigned short)
#undef WB_ATOMIC_IMPL

cudaError_t func_set_attribute(const void* f, int attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024) return g_last_error = cudaErrorInvalidValue;
    g_func_optin[f] = value;
    g_optin_max = std::max(g_optin_max, (long long)value);
  }
  return cudaSuccess;
}
int launch_args(const void* f, dim3, dim3, void**, size_t, cudaStream_t) {
  (void)f;
  return launch_error("cudaLaunchKernel with an untyped (void*) kernel pointer: its parameter types are unknown "
                      "here; pass the kernel itself (not interpreted)");
}

namespace {
std::vector<void*> g_host_allocs;
void* poisoned_alloc(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, n ? n : 1)) return nullptr;
  memset(p, 0xff, n);  // uninitialised device memory reads as NaN / -1, not as zeros
  return p;
}
}  // namespace

}  // namespace wb

using namespace wb;

// ================================================================================================ init, hooks
namespace wb {
namespace {
bool g_inited = false;
void segv_handler(int sig, siginfo_t* si, void* uc);
struct sigaction g_old_segv, g_old_bus;
void init_once() {
  if (g_inited) return;
  g_inited = true;
  dl_iterate_phdr(phdr_cb, reinterpret_cast<void*>(&init_once));
  if (const char* s = getenv("WB_INTERP_STACK_KB")) {
    const long kb = atol(s);
    if (kb >= 16) g_stack_bytes = (size_t)kb * 1024;
  }
  if (const char* s = getenv("WB_INTERP_RACECHECK")) g_racecheck = strcmp(s, "0") != 0;
  static char altstack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = altstack;
  ss.ss_size = sizeof altstack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa{};
  sa.sa_sigaction = segv_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
  rebuild_buffers(nullptr);
}
void segv_handler(int sig, siginfo_t* si, void* ucv) {
  struct sigaction* old = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
  if (in_fiber()) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    const Fiber& f = *g_cur;
    const bool overflow = a < (uintptr_t)f.stack_lo && a + 4096 >= (uintptr_t)f.stack_lo;
    uintptr_t pc = 0;
#if defined(__x86_64__)
    pc = (uintptr_t)static_cast<ucontext_t*>(ucv)->uc_mcontext.gregs[REG_RIP] + 1;
#endif
    std::string msg = overflow
        ? fmt("crash: stack overflow of a CUDA thread (%zu KB; WB_INTERP_STACK_KB raises it) %s at %s",
              g_stack_bytes / 1024, who().c_str(), symbolize(pc).c_str())
        : fmt("crash: %s at address %p %s at %s", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", si->si_addr, who().c_str(),
              symbolize(pc).c_str());
    fprintf(stderr, "wb-interp: %s\n", msg.c_str());
    if (const char* path = getenv("WB_INTERP_CRASH_FILE")) {
      if (FILE* fp = fopen(path, "w")) {
        fputs(msg.c_str(), fp);
        fclose(fp);
      }
    }
    fflush(stderr);
  }
  // hand over to whoever was there before (default: die with the signal)
  sigaction(sig, old, nullptr);
  if (!(old->sa_flags & SA_SIGINFO) && (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)) {
    signal(sig, SIG_DFL);
    return;  // the faulting instruction runs again and the default action ends the process
  }
  if (old->sa_flags & SA_SIGINFO) old->sa_sigaction(sig, si, ucv);
  else old->sa_handler(sig);
}
}  // namespace
}  // namespace wb

#define WB_HOOK(N)                                                                                   \
  extern "C" WB_HIDDEN void __asan_load##N##_noabort(uintptr_t a) {                                  \
    if (a - g_fast_lo < g_fast_size) return;                                                         \
    check_slow(a, N, 0, (uint64_t)(uintptr_t)__builtin_return_address(0));                           \
    spin_check();                                                                                    \
  }                                                                                                  \
  extern "C" WB_HIDDEN void __asan_store##N##_noabort(uintptr_t a) {                                 \
    if (a - g_fast_lo < g_fast_size) return;                                                         \
    check_slow(a, N, 1, (uint64_t)(uintptr_t)__builtin_return_address(0));                           \
    spin_check();                                                                                    \
  }
WB_HOOK(1)
WB_HOOK(2)
WB_HOOK(4)
WB_HOOK(8)
WB_HOOK(16)
#undef WB_HOOK
extern "C" WB_HIDDEN void __asan_loadN_noabort(uintptr_t a, size_t n) {
  if (a - g_fast_lo < g_fast_size || !n) return;
  check_slow(a, n, 0, (uint64_t)(uintptr_t)__builtin_return_address(0));
  spin_check();
}
extern "C" WB_HIDDEN void __asan_storeN_noabort(uintptr_t a, size_t n) {
  if (a - g_fast_lo < g_fast_size || !n) return;
  check_slow(a, n, 1, (uint64_t)(uintptr_t)__builtin_return_address(0));
  spin_check();
}
extern "C" WB_HIDDEN void __asan_handle_no_return() {}

// UBSan's alignment check (-fsanitize=alignment): the static type's alignment, so a float4 load at 4 mod 16 is caught
// exactly where the GPU would raise a misaligned address, and struct copies of 4-byte-aligned types are not.
struct UbsanLoc {
  const char* file;
  uint32_t line, column;
};
struct UbsanType {
  uint16_t kind, info;
  char name[1];
};
struct UbsanMismatch {
  UbsanLoc loc;
  const UbsanType* type;
  unsigned char log_alignment, check_kind;
};
static void ubsan_mismatch(UbsanMismatch* d, uintptr_t p) {
  if (!in_fiber()) return;
  const unsigned long align = 1ul << d->log_alignment;
  if (!p || !(p & (align - 1))) return;
  std::string type = d->type ? d->type->name : "?";  // "'const struct float4'" -> "float4"
  for (const char* junk : {"'", "const ", "volatile ", "struct ", "union ", "class "})
    for (size_t k; (k = type.find(junk)) != std::string::npos;) type.erase(k, strlen(junk));
  const bool sh = is_shared(reinterpret_cast<void*>(p));
  raise_fault(FAULT_MEMCHECK,
              fmt("misaligned %s %s at %s (address %% %lu = %lu) %s at %s:%u",
                  d->check_kind == 0 ? "load of" : d->check_kind == 1 ? "store to" : "access to", type.c_str(),
                  sh ? describe_shared(p).c_str() : describe_global(p).c_str(), align, (unsigned long)(p & (align - 1)),
                  who().c_str(), base_name(d->loc.file), d->loc.line),
              cudaErrorMisalignedAddress);
}
extern "C" WB_HIDDEN void __ubsan_handle_type_mismatch_v1(UbsanMismatch* d, uintptr_t p) { ubsan_mismatch(d, p); }
extern "C" WB_HIDDEN void __ubsan_handle_type_mismatch_v1_abort(UbsanMismatch* d, uintptr_t p) {
  ubsan_mismatch(d, p);
}

// assert() in the user's code: the rewriter maps __assert_fail to this
extern "C" WB_HIDDEN void wb_assert_fail(const char* expr, const char* file, unsigned line, const char* func) {
  assert_fail(expr, file, line, func);
}
// exit()/abort() in the user's host code (a CUDA_CHECK macro): unwind to the caller instead of ending the worker
extern "C" WB_HIDDEN void wb_exit(int code) {
  throw std::runtime_error(g_fault.kind ? g_fault.msg : fmt("the library called exit(%d)", code));
}
extern "C" WB_HIDDEN void wb_abort() {
  throw std::runtime_error(g_fault.kind ? g_fault.msg : std::string("the library called abort()"));
}

// ================================================================================================ CUDA runtime API
namespace {
const char* err_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    default: return "cudaErrorUnknown";
  }
}
const char* err_text(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
  }
}
cudaError_t sticky() { return g_fault.kind && g_fault.kind != FAULT_LAUNCH ? (cudaError_t)g_fault.code : cudaSuccess; }
}  // namespace

cudaError_t cudaMalloc(void** p, size_t n) {
  init_once();
  *p = poisoned_alloc(n);
  if (!*p) return g_last_error = cudaErrorMemoryAllocation;
  g_malloc_bufs.push_back(Buffer{(uintptr_t)*p, (uintptr_t)*p + n, fmt("cudaMalloc#%u", ++g_malloc_count)});
  g_malloc_sizes[(uintptr_t)*p] = n;
  rebuild_buffers(nullptr);
  return cudaSuccess;
}
cudaError_t cudaMallocManaged(void** p, size_t n, unsigned) { return cudaMalloc(p, n); }
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
cudaError_t cudaMallocHost(void** p, size_t n) {
  init_once();
  *p = poisoned_alloc(n);
  if (!*p) return cudaErrorMemoryAllocation;
  g_malloc_bufs.push_back(Buffer{(uintptr_t)*p, (uintptr_t)*p + n, fmt("cudaMallocHost#%u", ++g_malloc_count)});
  rebuild_buffers(nullptr);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) { return cudaMallocHost(p, n); }
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  for (size_t i = 0; i < g_malloc_bufs.size(); ++i)
    if (g_malloc_bufs[i].lo == (uintptr_t)p) {
      g_malloc_bufs.erase(g_malloc_bufs.begin() + (long)i);
      g_malloc_sizes.erase((uintptr_t)p);
      free(p);
      rebuild_buffers(nullptr);
      return cudaSuccess;
    }
  return g_last_error = cudaErrorInvalidValue;  // not from cudaMalloc (a double free, a host pointer)
}
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind k) {
  if (cudaError_t e = sticky()) return e;
  if (k == cudaMemcpyDeviceToHost || k == cudaMemcpyDefault) dry_note("device memory read back by cudaMemcpy");
  if (n) memmove(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemcpy2D(void* d, size_t dp, const void* s, size_t sp, size_t w, size_t h, cudaMemcpyKind k) {
  if (cudaError_t e = sticky()) return e;
  if (k == cudaMemcpyDeviceToHost || k == cudaMemcpyDefault) dry_note("device memory read back by cudaMemcpy2D");
  for (size_t r = 0; r < h; ++r) memmove(static_cast<char*>(d) + r * dp, static_cast<const char*>(s) + r * sp, w);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* d, int v, size_t n) {
  if (cudaError_t e = sticky()) return e;
  memset(d, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { return cudaMemset(d, v, n); }
cudaError_t cudaDeviceSynchronize() { return sticky(); }
cudaError_t cudaThreadSynchronize() { return sticky(); }
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  if (!(g_fault.kind && g_fault.kind != FAULT_LAUNCH)) g_last_error = cudaSuccess;  // execution errors are sticky
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorName(cudaError_t e) { return err_name(e); }
const char* cudaGetErrorString(cudaError_t e) {
  static std::string s;
  if (g_fault.kind && e == (cudaError_t)g_fault.code) {
    s = std::string(err_text(e)) + " [" + g_fault.msg + "]";
    return s.c_str();
  }
  return err_text(e);
}
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  dry_note("device query cudaGetDeviceProperties (answered as an H100 SXM: 132 SMs)");
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "CPU interpreter (H100 limits)");
  p->totalGlobalMem = 80ull << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->l2CacheSize = 50 << 20;
  p->clockRate = 1980000;
  p->totalConstMem = 65536;
  p->unifiedAddressing = 1;
  p->concurrentKernels = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  dry_note("device query cudaDeviceGetAttribute (answered as an H100 SXM: 132 SMs)");
  switch (a) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 * 1024; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMultiProcessorCount: *v = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = 228 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    case cudaDevAttrL2CacheSize: *v = 50 << 20; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *v = 2048; break;
    case cudaDevAttrMaxRegistersPerBlock: *v = 65536; break;
    case cudaDevAttrClockRate: *v = 1980000; break;
    default: *v = 0; return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSetCacheConfig(cudaFuncCache) { return cudaSuccess; }
struct CUstream_st { int dummy; };
struct CUevent_st { int dummy; };
cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = reinterpret_cast<cudaStream_t>(new CUstream_st{}); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned, int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<CUstream_st*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return sticky(); }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = reinterpret_cast<cudaEvent_t>(new CUevent_st{}); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return sticky(); }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.f;  // interpreted kernels are not timed
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<CUevent_st*>(e);
  return cudaSuccess;
}
cudaError_t cudaGetDriverEntryPoint(const char* sym, void** fn, unsigned long long, cudaDriverEntryPointQueryResult* q) {
  *fn = nullptr;
  if (!strcmp(sym, "cuTensorMapEncodeTiled")) *fn = reinterpret_cast<void*>(&cuTensorMapEncodeTiled);
  else if (!strcmp(sym, "cuGetErrorString")) *fn = reinterpret_cast<void*>(&cuGetErrorString);
  if (q) *q = *fn ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char* sym, void** fn, unsigned, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* q) {
  return cudaGetDriverEntryPoint(sym, fn, flags, q);
}
cudaError_t cudaRuntimeGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = CUDA_VERSION; return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) { *f = 64ull << 30; *t = 80ull << 30; return cudaSuccess; }

// ---- driver API: the tensor-map encoder validates like the driver and stores a readable description
CUresult cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType dt, cuuint32_t rank, void* base,
                                const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                const cuuint32_t* estr, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  static const uint32_t esize[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  if (!map || rank < 1 || rank > 5 || (unsigned)dt > 12 || ((uintptr_t)base & 15)) return CUDA_ERROR_INVALID_VALUE;
  wb::TensorMapDesc d{};
  d.magic = 0x574254d0u;
  d.dtype = dt;
  d.rank = rank;
  d.interleave = il;
  d.swizzle = sw;
  d.l2promo = l2;
  d.oobfill = oob;
  d.elem_bytes = esize[dt];
  d.base = (uint64_t)(uintptr_t)base;
  for (unsigned i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (1ull << 32)) return CUDA_ERROR_INVALID_VALUE;
    if (box[i] == 0 || box[i] > 256 || estr[i] == 0 || estr[i] > 8) return CUDA_ERROR_INVALID_VALUE;
    d.dims[i] = dims[i];
    d.box[i] = box[i];
    d.estr[i] = estr[i];
    if (i + 1 < rank) {
      if (strides[i] % 16 || strides[i] >= (1ull << 40)) return CUDA_ERROR_INVALID_VALUE;
      d.strides[i] = strides[i];
    }
  }
  const unsigned sw_bytes = sw == CU_TENSOR_MAP_SWIZZLE_32B ? 32 : sw == CU_TENSOR_MAP_SWIZZLE_64B ? 64
                          : sw == CU_TENSOR_MAP_SWIZZLE_128B ? 128 : 0;
  if (il == CU_TENSOR_MAP_INTERLEAVE_NONE && sw_bytes && box[0] * d.elem_bytes > sw_bytes)
    return CUDA_ERROR_INVALID_VALUE;  // the inner box dimension must fit the swizzle span
  if ((box[0] * d.elem_bytes) % 16) return CUDA_ERROR_INVALID_VALUE;
  memset(map, 0, sizeof *map);
  memcpy(map, &d, sizeof d);
  return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
  *s = e == CUDA_SUCCESS ? "no error" : (e == CUDA_ERROR_INVALID_VALUE ? "invalid argument" : "unknown error");
  return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult e, const char** s) {
  *s = e == CUDA_SUCCESS ? "CUDA_SUCCESS" : (e == CUDA_ERROR_INVALID_VALUE ? "CUDA_ERROR_INVALID_VALUE" : "CUDA_ERROR_UNKNOWN");
  return CUDA_SUCCESS;
}

// ---- cuBLAS: handles and a plain column-major SGEMM on the CPU (double accumulation)
struct cublasContext { int dummy; };
cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = new cublasContext{}; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "cuBLAS error (interpret mode)";
}
const char* cublasGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_EXECUTION_FAILED";
}
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        const float a = ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda];
        const float b = tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb];
        acc += (double)a * b;
      }
      float& c = C[i + (size_t)j * ldc];
      c = (float)(*alpha * acc + (*beta == 0.f ? 0.0 : (double)*beta * c));
    }
  return CUBLAS_STATUS_SUCCESS;
}

// ================================================================================================ Python's entry points
WBI_EXPORT int wbi_version() { return 1; }
WBI_EXPORT void wbi_reset() {
  init_once();
  g_fault = Fault{};
  g_last_error = cudaSuccess;
  g_launch_idx = 0;
  g_py_bufs.clear();
  rebuild_buffers(nullptr);
}
WBI_EXPORT void wbi_clear_fault() {
  g_fault = Fault{};
  g_last_error = cudaSuccess;
}
WBI_EXPORT void wbi_set_seed(unsigned long long seed) {
  g_seed = seed;
  g_launch_idx = 0;
}
WBI_EXPORT void wbi_set_options(int racecheck, int stack_kb) {
  if (racecheck >= 0) g_racecheck = racecheck != 0;
  if (stack_kb >= 16 && (size_t)stack_kb * 1024 != g_stack_bytes) {
    if (g_stacks) munmap(g_stacks, g_stacks_n * (g_stack_bytes + 4096));
    g_stacks = nullptr;
    g_stacks_n = 0;
    g_stack_bytes = (size_t)stack_kb * 1024;
  }
}
WBI_EXPORT void wbi_clear_buffers() {
  g_py_bufs.clear();
  rebuild_buffers(nullptr);
}
WBI_EXPORT void wbi_add_buffer(unsigned long long lo, unsigned long long n, const char* name) {
  g_py_bufs.push_back(Buffer{(uintptr_t)lo, (uintptr_t)(lo + n), name ? name : "buffer"});
  rebuild_buffers(nullptr);
}
WBI_EXPORT void wbi_set_dry(int on) {
  init_once();
  g_dry = on != 0;
  if (g_dry) {
    g_dry_log.clear();
    g_dry_notes.clear();
  }
}
WBI_EXPORT int wbi_dry_count() { return (int)g_dry_log.size(); }
// launch i: its name (as written at the <<<>>>), out[0..6] = grid xyz, block xyz, dynamic shared bytes
WBI_EXPORT const char* wbi_dry_launch(int i, unsigned long long* out) {
  if (i < 0 || (size_t)i >= g_dry_log.size()) return nullptr;
  const DryLaunch& d = g_dry_log[(size_t)i];
  for (int k = 0; k < 3; ++k) out[k] = d.grid[k], out[3 + k] = d.block[k];
  out[6] = d.smem;
  return d.name.c_str();
}
WBI_EXPORT int wbi_dry_note_count() { return (int)g_dry_notes.size(); }
WBI_EXPORT const char* wbi_dry_note(int i, unsigned long long* before) {
  if (i < 0 || (size_t)i >= g_dry_notes.size()) return nullptr;
  *before = g_dry_notes[(size_t)i].first;
  return g_dry_notes[(size_t)i].second.c_str();
}
WBI_EXPORT int wbi_fault_kind() { return g_fault.kind; }
WBI_EXPORT const char* wbi_fault_message() { return g_fault.msg.c_str(); }
WBI_EXPORT void wbi_stats(unsigned long long* out) {
  out[0] = g_stats.launches;
  out[1] = g_stats.blocks;
  out[2] = g_stats.threads;
  out[3] = g_stats.switches;
  out[4] = g_stats.slow_global;
  out[5] = g_stats.slow_shared;
  out[6] = g_stats.barriers;
  out[7] = g_stats.collectives;
}

// ================================================================================================ Hopper PTX models
// mbarrier, cp.async.bulk.tensor (TMA), wgmma, setmaxnreg, fences: same translation unit, so that they can use the
// scheduler, the shadow and the happens-before clocks above (include/wbcpu_ptx90.h declares their entry points).
#include "wbcpu_ptx90.cpp"
