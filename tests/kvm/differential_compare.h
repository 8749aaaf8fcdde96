// Differential CPU tests: comparing what two engines left behind, and reporting a case so it
// can be read and reproduced (seed, index, disassembly, every differing register/flag/byte).
#pragma once

#include <string>
#include <vector>

#include "differential_gen.h"
#include "differential_guest.h"

namespace vessel::difftest {

// Every difference between the reference (`ref`, real silicon) and `got`, one line each:
// GPRs, RIP, RFLAGS (masked), MXCSR, XMM0-15, the flag trace (masked per step) and every other
// byte of the window. Empty when they agree.
std::vector<std::string> compare(const Case& c, const Observed& ref, const Observed& got,
                                 const std::string& ref_name = "kvm", const std::string& got_name = "soft");

// Intel-syntax disassembly of `code` at `address`, one instruction per line.
std::string disassemble(const uint8_t* code, size_t size, uint64_t address);

// The case's steps (set-up and instruction under test, trace stubs left out), initial flags and
// MXCSR: enough to read a mismatch report.
std::string describe(const Case& c);

// "CF ZF ..." for RFLAGS bits.
std::string flag_names(uint64_t flags);

} // namespace vessel::difftest
