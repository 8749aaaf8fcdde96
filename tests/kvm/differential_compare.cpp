#include "differential_compare.h"

#include <Zydis/Zydis.h>

#include <cstring>

#include <fmt/format.h>

namespace vessel::difftest {

namespace {

constexpr const char* kGprNames[16] = { "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
                                        "R8",  "R9",  "R10", "R11", "R12", "R13", "R14", "R15" };

std::string hex_bytes(const uint8_t* p, size_t n)
{
    std::string s;
    for (size_t i = 0; i < n; ++i)
        s += fmt::format("{:02x}", p[i]);
    return s;
}

// XMM as two little-endian qwords, high first.
std::string xmm_str(const uint8_t* p)
{
    uint64_t lo, hi;
    std::memcpy(&lo, p, 8);
    std::memcpy(&hi, p + 8, 8);
    return fmt::format("{:016x}_{:016x}", hi, lo);
}

std::string one_insn(const Case& c, uint32_t offset)
{
    if (offset >= c.code.size())
        return "?";
    std::string s = disassemble(c.code.data() + offset, c.code.size() - offset, c.code_addr + offset);
    auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

} // namespace

std::string flag_names(uint64_t flags)
{
    static const std::pair<uint64_t, const char*> names[] = { { kCF, "CF" }, { kPF, "PF" }, { kAF, "AF" }, { kZF, "ZF" },
                                                             { kSF, "SF" }, { kDF, "DF" }, { kOF, "OF" } };
    std::string s;
    for (auto [bit, name] : names) {
        if (flags & bit) {
            if (!s.empty())
                s += ' ';
            s += name;
        }
    }
    return s.empty() ? "-" : s;
}

std::string disassemble(const uint8_t* code, size_t size, uint64_t address)
{
    ZydisDecoder dec;
    ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    ZydisFormatter fmt;
    ZydisFormatterInit(&fmt, ZYDIS_FORMATTER_STYLE_INTEL);
    std::string out;
    size_t off = 0;
    while (off < size) {
        ZydisDecodedInstruction insn;
        ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
        if (ZYAN_FAILED(ZydisDecoderDecodeFull(&dec, code + off, size - off, &insn, ops))) {
            out += fmt::format("  {:#08x}  {:02x}  (bad)\n", address + off, code[off]);
            ++off;
            continue;
        }
        char text[256];
        ZydisFormatterFormatInstruction(&fmt, &insn, ops, insn.operand_count_visible, text, sizeof(text),
                                        address + off, nullptr);
        out += fmt::format("  {:#08x}  {:<30} {}\n", address + off, hex_bytes(code + off, insn.length), text);
        off += insn.length;
    }
    return out;
}

std::string describe(const Case& c)
{
    std::string s = fmt::format("case {} of seed {:#x} (rerun: VESSEL_DIFF_SEED={:#x} VESSEL_DIFF_CASE={})\n", c.index,
                                c.seed, c.seed, c.index);
    s += fmt::format("initial RFLAGS {:#x} [{}], MXCSR {:#x}\n", c.rflags, flag_names(c.rflags), c.mxcsr);
    for (int i = 0; i < 16; ++i)
        s += fmt::format("  {:<3} {:#018x}{}", kGprNames[i], c.gpr[i], i % 4 == 3 ? "\n" : "   ");
    for (int i = 0; i < 16; ++i)
        s += fmt::format("  XMM{:<2} {}{}", i, xmm_str(c.xmm.data() + 16 * i), i % 2 == 1 ? "\n" : "   ");
    for (size_t k = 0; k < c.steps.size(); ++k) {
        const Step& st = c.steps[k];
        s += fmt::format("step {} ({}), compared flags after it: {}\n", k, st.what, flag_names(c.trace_mask[k]));
        if (st.main > st.begin)
            s += disassemble(c.code.data() + st.begin, st.main - st.begin, c.code_addr + st.begin);
        std::string main = disassemble(c.code.data() + st.main, st.end - st.main, c.code_addr + st.main);
        if (!main.empty())
            main[0] = '>';
        s += main;
        if (st.tail > st.end)
            s += disassemble(c.code.data() + st.end, st.tail - st.end, c.code_addr + st.end);
    }
    return s;
}

std::vector<std::string> compare(const Case& c, const Observed& ref, const Observed& got, const std::string& rn,
                                 const std::string& gn)
{
    std::vector<std::string> out;
    if (!ref.error.empty())
        out.push_back(fmt::format("{} (the reference) did not finish: {}", rn, ref.error));
    if (!got.error.empty())
        out.push_back(fmt::format("{} did not finish: {}", gn, got.error));
    if (!out.empty() && ref.error == got.error)
        return out; // both stopped the same way: nothing else is comparable
    if (c.expect_fault != (ref.fault.vector >= 0)) {
        out.push_back(fmt::format("generator: the case {} fault, but the reference {}", c.expect_fault ? "should" : "should not",
                                  ref.fault.vector >= 0 ? fmt::format("took vector {} at RIP {:#x}", ref.fault.vector, ref.fault.rip)
                                                        : std::string("finished")));
    }
    if (ref.fault.vector != got.fault.vector) {
        auto str = [](const FaultInfo& f) {
            return f.vector < 0 ? std::string("none") : fmt::format("vector {} at RIP {:#x}", f.vector, f.rip);
        };
        out.push_back(fmt::format("exception: {}={} {}={}", rn, str(ref.fault), gn, str(got.fault)));
    } else if (ref.fault.vector >= 0) {
        const FaultInfo &a = ref.fault, &b = got.fault;
        if (a.error_code != b.error_code)
            out.push_back(fmt::format("exception error code: {}={:#x} {}={:#x}", rn, a.error_code, gn, b.error_code));
        if (a.rip != b.rip)
            out.push_back(fmt::format("exception RIP: {}={:#x} {}={:#x}", rn, a.rip, gn, b.rip));
        if (a.rsp != b.rsp)
            out.push_back(fmt::format("exception RSP: {}={:#x} {}={:#x}", rn, a.rsp, gn, b.rsp));
        if ((a.rflags ^ b.rflags) & c.flags_mask)
            out.push_back(fmt::format("exception RFLAGS: {}={:#x} {}={:#x}, differing: {}", rn, a.rflags, gn, b.rflags,
                                      flag_names((a.rflags ^ b.rflags) & c.flags_mask)));
        if (a.cr2 != b.cr2)
            out.push_back(fmt::format("CR2: {}={:#x} {}={:#x}", rn, a.cr2, gn, b.cr2));
    }
    for (int i = 0; i < 16; ++i) {
        if (ref.gpr[i] != got.gpr[i])
            out.push_back(fmt::format("{}: {}={:#018x} {}={:#018x}", kGprNames[i], rn, ref.gpr[i], gn, got.gpr[i]));
    }
    if (ref.rip != got.rip)
        out.push_back(fmt::format("RIP: {}={:#x} {}={:#x}", rn, ref.rip, gn, got.rip));
    uint64_t fdiff = (ref.rflags ^ got.rflags) & c.flags_mask;
    if (fdiff) {
        out.push_back(fmt::format("final RFLAGS: {}={:#x} {}={:#x}, differing: {} (compared: {})", rn, ref.rflags, gn,
                                  got.rflags, flag_names(fdiff), flag_names(c.flags_mask)));
    }
    if (ref.mxcsr != got.mxcsr)
        out.push_back(fmt::format("MXCSR: {}={:#x} {}={:#x}", rn, ref.mxcsr, gn, got.mxcsr));
    for (int i = 0; i < 16; ++i) {
        if (std::memcmp(ref.xmm.data() + 16 * i, got.xmm.data() + 16 * i, 16) != 0) {
            out.push_back(fmt::format("XMM{}: {}={} {}={}", i, rn, xmm_str(ref.xmm.data() + 16 * i), gn,
                                      xmm_str(got.xmm.data() + 16 * i)));
        }
    }
    if (ref.window.size() != kWindowSize || got.window.size() != kWindowSize) {
        out.push_back("memory window missing");
        return out;
    }
    // The flag trace: slot k holds RFLAGS after step k.
    uint64_t trace_off = kTraceBase - kWindowBase;
    for (size_t k = 0; k < c.trace_mask.size(); ++k) {
        uint64_t a, b;
        std::memcpy(&a, ref.window.data() + trace_off + 8 * k, 8);
        std::memcpy(&b, got.window.data() + trace_off + 8 * k, 8);
        uint64_t diff = (a ^ b) & c.trace_mask[k];
        if (diff) {
            out.push_back(fmt::format("RFLAGS after step {} `{}`: {}={:#x} {}={:#x}, differing: {}", k,
                                      one_insn(c, c.steps[k].main), rn, a, gn, b, flag_names(diff)));
        }
    }
    // Every other byte of the window, as runs of up to 32 differing bytes.
    constexpr size_t kMaxRuns = 128;
    uint64_t trace_end = trace_off + 8 * kTraceSlots;
    size_t runs = 0;
    for (size_t i = 0; i < kWindowSize;) {
        if ((i >= trace_off && i < trace_end) || ref.window[i] == got.window[i]) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < kWindowSize && j - i < 32 && !(j >= trace_off && j < trace_end) && ref.window[j] != got.window[j])
            ++j;
        if (++runs <= kMaxRuns) {
            out.push_back(fmt::format("memory {:#x}+{}: {}={} {}={}", kWindowBase + i, j - i, rn,
                                      hex_bytes(ref.window.data() + i, j - i), gn, hex_bytes(got.window.data() + i, j - i)));
        }
        i = j;
    }
    if (runs > kMaxRuns)
        out.push_back(fmt::format("... {} more differing memory runs", runs - kMaxRuns));
    return out;
}

} // namespace vessel::difftest
