// Differential CPU tests: the generator's internals, shared by differential_gen*.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <xbyak/xbyak.h>

#include "differential_gen.h"

namespace vessel::difftest {

// A general-purpose register operand: index 0..15 and width in bytes. `high` selects AH..BH
// (idx 0..3), which only legacy-encoded (REX-free) instructions can name.
struct GReg {
    int idx { 0 };
    unsigned width { 8 };
    bool high { false };
};

// Where a memory operand may land and how.
struct MemSpec {
    unsigned size { 8 };   // bytes accessed
    unsigned align { 1 };  // alignment of the target address
    bool no_rex { false }; // base/index limited to RAX..RDI (AH..BH in the same instruction)
    uint64_t lo { kDataBase + 64 };
    uint64_t hi { kDataBase + kDataSize - 64 };
    int64_t rsp_bias { 0 }; // RSP as the instruction sees it when it computes the address
};

class Gen : public Xbyak::CodeGenerator {
public:
    Gen(Case& c, uint64_t seed);

    void build(const GenOptions& options);
    const GenOptions& options() const { return *m_options; }

    // Randomness.
    uint64_t rnd() { return m_rng(); }
    uint64_t below(uint64_t n) { return n ? m_rng() % n : 0; }
    bool chance(unsigned percent) { return below(100) < percent; }
    int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1))); }
    uint64_t interesting(unsigned width); // a value of `width` bytes biased to edge cases
    unsigned width_any() { return 1u << below(4); }
    unsigned width_16up() { return 2u << below(3); }

    // Registers.
    GReg pick_reg(unsigned width, bool dest, bool no_rex, uint32_t exclude = 0);
    Xbyak::Reg reg(const GReg& r) const;
    static Xbyak::Reg reg(int idx, unsigned width);
    void pin(int idx) { m_pinned |= 1u << idx; }
    uint32_t pinned() const { return m_pinned; }

    // A memory operand (emits the set-up that makes it point where `spec` says); `addr` gets the
    // effective address. `bits` = the operand-size frame (0: none, 8..128).
    Xbyak::Address mem(unsigned bits, const MemSpec& spec, uint64_t* addr = nullptr);
    // An absolute [disp32] operand for set-up code.
    Xbyak::Address abs(unsigned bits, uint64_t addr);
    uint64_t pick_addr(const MemSpec& spec);
    // Set-up: loads a constant into a register (flag-neutral).
    void set_reg(int idx, unsigned width, uint64_t value);

    // Writes `value` into the constant pool (case window) and returns its address.
    uint64_t constant(const void* value, size_t size, size_t align);

    // Flags bookkeeping around the instruction under test.
    void begin_main(uint64_t reads = 0);
    void effects(uint64_t written, uint64_t undefined = 0);
    bool in_main() const { return m_in_main; }
    bool df() const { return m_df; }
    void set_df(bool df) { m_df = df; }
    int64_t rsp_off() const { return m_rsp_off; }
    void move_rsp(int64_t delta) { m_rsp_off += delta; }
    uint64_t rsp_now() const { return m_rsp_init + static_cast<uint64_t>(m_rsp_off); }

    // Guest address of the next byte emitted.
    uint64_t here() const { return m_case.code_addr + getSize(); }

    // Condition-code helpers (cc = the low nibble of Jcc/SETcc/CMOVcc).
    static uint64_t cc_reads(unsigned cc);
    void emit_cmov(unsigned cc, const Xbyak::Reg& r, const Xbyak::Operand& op);
    void emit_setcc(unsigned cc, const Xbyak::Operand& op);

    // Generator classes (differential_gen_int.cpp / differential_gen_sse.cpp).
    void g_alu2();
    void g_alu1();
    void g_shift();
    void g_shxd();
    void g_mul();
    void g_div();
    void g_bt();
    void g_bitscan();
    void g_movx();
    void g_xchg();
    void g_cmpxchg8b();
    void g_cmov_setcc();
    void g_lea();
    void g_pushpop();
    void g_string();
    void g_flagops();
    void g_sse_int();
    void g_sse_shift();
    void g_sse_shuffle();
    void g_sse_move();
    void g_sse_fp();
    void g_sse_cmp();
    void g_sse_cvt();
    void g_sse_logic();
    void g_mxcsr();
    void g_branch();
    void g_smc();
    void g_fault();

    struct ClassEntry {
        const char* name;
        unsigned weight;
        void (Gen::*fn)();
    };
    static const std::vector<ClassEntry>& classes();

    // Initial-state helpers.
    void fill_vector(uint8_t* out16);
    uint32_t random_mxcsr();

private:
    void trace_stub(uint32_t slot);

    Case& m_case;
    const GenOptions* m_options { nullptr };
    std::mt19937_64 m_rng;
    uint64_t m_undef { 0 };  // flags whose value is undefined at this point
    bool m_df { false };     // DF at this point
    uint64_t m_rsp_init { kStackInit };
    int64_t m_rsp_off { 0 }; // RSP - m_rsp_init at this point
    uint8_t m_seg_prefix { 0 }; // FS/GS override chosen by mem() for the instruction under test
    uint32_t m_pinned { 0 }; // registers the current step's set-up owns
    uint64_t m_const_used { 0 };
    bool m_in_main { false };
    uint32_t m_main_offset { 0 };
};

} // namespace vessel::difftest
