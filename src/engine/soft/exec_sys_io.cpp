// Port I/O: IN, OUT, INS, OUTS (all widths, REP forms) through the VM's IoHandler, with the
// protected-mode permission check (CPL <= IOPL, else the TSS I/O bitmap).
#include <span>

#include "engine/engine.h"
#include "engine/soft/exec_sys.h"
#include "engine/soft/mmu.h"

namespace vessel::soft::sys {

namespace {

// Elements a REP INS/OUTS moves before giving the block loop a chance to deliver interrupts
// (the instruction then restarts with the remaining count).
constexpr unsigned kRepChunk = 4096;

bool io_allowed(Cpu& c, uint16_t port, unsigned size)
{
    if (c.mode == CpuMode::Real || (!(c.rflags & kVM) && c.cpl <= iopl(c)))
        return true;
    const SegmentReg& tr = c.tr;
    if (tr.unusable || !(tr.type == 9 || tr.type == 11) || tr.limit < 103)
        return false;
    auto lin = [&](uint64_t a) { return in_ia32e(c) ? a : (a & 0xffffffffULL); };
    uint16_t map = read_sys<uint16_t>(c, lin(tr.base + 102));
    uint64_t off = static_cast<uint64_t>(map) + port / 8;
    if (off + 1 > tr.limit)
        return false;
    uint16_t bits = read_sys<uint16_t>(c, lin(tr.base + off));
    unsigned mask = ((1u << size) - 1) << (port & 7);
    return !(bits & mask);
}

void check_io(Cpu& c, uint16_t port, unsigned size)
{
    if (!io_allowed(c, port, size))
        raise_fault(kExcGP, 0);
}

uint64_t port_read(Cpu& c, uint16_t port, unsigned size)
{
    uint8_t buf[4] = {};
    c.io->pio_read(port, std::span(buf, size));
    return static_cast<uint64_t>(buf[0]) | (static_cast<uint64_t>(buf[1]) << 8) | (static_cast<uint64_t>(buf[2]) << 16)
        | (static_cast<uint64_t>(buf[3]) << 24);
}

void port_write(Cpu& c, uint16_t port, unsigned size, uint64_t v)
{
    uint8_t buf[4] = { static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v >> 16),
        static_cast<uint8_t>(v >> 24) };
    c.io->pio_write(port, std::span<const uint8_t>(buf, size));
}

// IN/OUT: E4/E5/E6/E7 take an imm8 port, EC/ED/EE/EF use DX; odd opcodes move AX or EAX.
unsigned io_size(const Insn& in) { return (in.opcode & 1) ? (in.osize == 2 ? 2 : 4) : 1; }
uint16_t io_port(const Cpu& c, const Insn& in)
{
    return (in.opcode & 0x08) ? static_cast<uint16_t>(c.gpr[RDX]) : static_cast<uint16_t>(in.imm & 0xff);
}

void exec_in(Cpu& c, const Insn& in)
{
    unsigned size = io_size(in);
    uint16_t port = io_port(c, in);
    check_io(c, port, size);
    write_gpr(c, RAX, size, port_read(c, port, size));
    c.stop_block = true;
}

void exec_out(Cpu& c, const Insn& in)
{
    unsigned size = io_size(in);
    uint16_t port = io_port(c, in);
    check_io(c, port, size);
    port_write(c, port, size, c.gpr[RAX]);
    c.stop_block = true;
}

unsigned string_size(const Insn& in)
{
    switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_INSB:
    case ZYDIS_MNEMONIC_OUTSB: return 1;
    case ZYDIS_MNEMONIC_INSW:
    case ZYDIS_MNEMONIC_OUTSW: return 2;
    default: return 4;
    }
}

// Checks that `size` bytes at `linear` can be written (throws #PF) before a port read whose
// side effects could not be undone.
void probe_write(Cpu& c, uint64_t linear, unsigned size)
{
    bool user = c.cpl == 3;
    translate(c, linear, Access::Write, user);
    if ((linear & 0xfff) + size > 0x1000)
        translate(c, linear + size - 1, Access::Write, user);
}

template<bool kIns>
void exec_string_io(Cpu& c, const Insn& in)
{
    unsigned size = string_size(in);
    uint16_t port = static_cast<uint16_t>(c.gpr[RDX]);
    check_io(c, port, size);
    uint64_t amask = addr_mask(in.asize);
    bool rep = in.flags & (kFlagRep | kFlagRepne);
    if (rep && (c.gpr[RCX] & amask) == 0)
        return;
    uint64_t step = (c.rflags & kDF) ? static_cast<uint64_t>(-static_cast<int64_t>(size)) : size;
    unsigned index_reg = kIns ? RDI : RSI;
    for (unsigned done = 1;; ++done) {
        uint64_t offset = c.gpr[index_reg] & amask;
        if constexpr (kIns) {
            uint64_t lin = seg_linear(c, ES, offset);
            probe_write(c, lin, size);
            write_mem(c, lin, size, port_read(c, port, size));
        } else {
            port_write(c, port, size, read_mem(c, seg_linear(c, in.seg, offset), size));
        }
        write_gpr(c, index_reg, in.asize, offset + step);
        if (!rep)
            break;
        uint64_t count = (c.gpr[RCX] - 1) & amask;
        write_gpr(c, RCX, in.asize, count);
        if (count == 0)
            break;
        if (done == kRepChunk) {
            c.rip = c.insn_start; // continue after pending events
            break;
        }
    }
    c.stop_block = true;
}

} // namespace

void register_io(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_IN] = &exec_in;
    t[ZYDIS_MNEMONIC_OUT] = &exec_out;
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_INSB, ZYDIS_MNEMONIC_INSW, ZYDIS_MNEMONIC_INSD })
        t[m] = &exec_string_io<true>;
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_OUTSB, ZYDIS_MNEMONIC_OUTSW, ZYDIS_MNEMONIC_OUTSD })
        t[m] = &exec_string_io<false>;
}

} // namespace vessel::soft::sys
