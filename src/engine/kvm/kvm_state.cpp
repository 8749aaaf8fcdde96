#include "engine/kvm/kvm_state.h"
#include "engine/kvm/kvm_sys.h"

#include <sys/ioctl.h>

#include <cstring>
#include <optional>
#include <vector>

namespace vessel {

namespace {

template<typename T>
Result<void> vcpu_ioctl(int fd, unsigned long request, T* arg, const char* name)
{
    if (::ioctl(fd, request, arg) < 0)
        return Error::from_errno(name);
    return {};
}

DescriptorTableReg from_kvm_dtable(const kvm_dtable& d)
{
    return { d.base, d.limit };
}

kvm_dtable to_kvm_dtable(const DescriptorTableReg& d)
{
    kvm_dtable out {};
    out.base = d.base;
    out.limit = d.limit;
    return out;
}

struct MsrBinding {
    uint32_t index;
    uint64_t MsrState::*field;
};

constexpr MsrBinding kMsrBindings[] = {
    { msr::kStar, &MsrState::star },
    { msr::kLstar, &MsrState::lstar },
    { msr::kCstar, &MsrState::cstar },
    { msr::kSfmask, &MsrState::sfmask },
    { msr::kKernelGsBase, &MsrState::kernel_gs_base },
    { msr::kSysenterCs, &MsrState::sysenter_cs },
    { msr::kSysenterEsp, &MsrState::sysenter_esp },
    { msr::kSysenterEip, &MsrState::sysenter_eip },
    { msr::kPat, &MsrState::pat },
    { msr::kTscAux, &MsrState::tsc_aux },
    { msr::kTscDeadline, &MsrState::tsc_deadline },
    { msr::kMiscEnable, &MsrState::misc_enable },
    { msr::kKvmSystemTimeNew, &MsrState::kvm_system_time },
    { msr::kKvmWallClockNew, &MsrState::kvm_wall_clock },
    { msr::kSpecCtrl, &MsrState::spec_ctrl },
};

// Buffer for KVM_GET_MSRS / KVM_SET_MSRS.
struct MsrBuffer {
    explicit MsrBuffer(size_t n)
        : buffer(n)
    {
    }
    void* header() { return buffer.data(); }
    kvm_msr_entry& entry(size_t i) { return buffer.entries()[i]; }
    kvm_sys::FlexBuffer<kvm_sys::MsrsHeader, kvm_msr_entry> buffer;
};

// KVM_GET_MSRS stops at the first MSR KVM does not know (a host without SPEC_CTRL, say): the
// read resumes after it, and that MSR alone is missing from the result.
Result<std::vector<std::optional<uint64_t>>> read_msrs(int fd, const std::vector<uint32_t>& indices)
{
    std::vector<std::optional<uint64_t>> out(indices.size());
    size_t next = 0;
    while (next < indices.size()) {
        size_t n = indices.size() - next;
        MsrBuffer msrs(n);
        for (size_t i = 0; i < n; ++i)
            msrs.entry(i).index = indices[next + i];
        int got = ::ioctl(fd, kvm_sys::kGetMsrs, msrs.header());
        if (got < 0)
            return Error::from_errno("KVM_GET_MSRS");
        for (size_t i = 0; i < static_cast<size_t>(got); ++i)
            out[next + i] = msrs.entry(i).data;
        next += static_cast<size_t>(got) + 1;
    }
    return out;
}

// KVM_SET_MSRS likewise stops at the first MSR it refuses. A refused MSR that holds what a fresh
// vCPU holds (`fresh`) loses nothing — a state saved on a host or engine that has the MSR, by a
// guest that never used it — and is skipped; any other refusal fails the restore.
Result<void> write_msrs(int fd, const std::vector<kvm_msr_entry>& entries, const std::vector<uint64_t>& fresh)
{
    size_t next = 0;
    while (next < entries.size()) {
        size_t n = entries.size() - next;
        MsrBuffer msrs(n);
        for (size_t i = 0; i < n; ++i)
            msrs.entry(i) = entries[next + i];
        int set = ::ioctl(fd, kvm_sys::kSetMsrs, msrs.header());
        if (set < 0)
            return Error::from_errno("KVM_SET_MSRS");
        next += static_cast<size_t>(set);
        if (next == entries.size())
            break;
        if (entries[next].data != fresh[next])
            return make_error("KVM_SET_MSRS refused MSR {:#x} = {:#x}", entries[next].index, entries[next].data);
        ++next;
    }
    return {};
}

void regs_from_kvm(CpuState& s, const kvm_regs& r)
{
    s.gpr[RAX] = r.rax;
    s.gpr[RCX] = r.rcx;
    s.gpr[RDX] = r.rdx;
    s.gpr[RBX] = r.rbx;
    s.gpr[RSP] = r.rsp;
    s.gpr[RBP] = r.rbp;
    s.gpr[RSI] = r.rsi;
    s.gpr[RDI] = r.rdi;
    s.gpr[R8] = r.r8;
    s.gpr[R9] = r.r9;
    s.gpr[R10] = r.r10;
    s.gpr[R11] = r.r11;
    s.gpr[R12] = r.r12;
    s.gpr[R13] = r.r13;
    s.gpr[R14] = r.r14;
    s.gpr[R15] = r.r15;
    s.rip = r.rip;
    s.rflags = r.rflags;
}

kvm_regs regs_to_kvm(const CpuState& s)
{
    kvm_regs r {};
    r.rax = s.gpr[RAX];
    r.rcx = s.gpr[RCX];
    r.rdx = s.gpr[RDX];
    r.rbx = s.gpr[RBX];
    r.rsp = s.gpr[RSP];
    r.rbp = s.gpr[RBP];
    r.rsi = s.gpr[RSI];
    r.rdi = s.gpr[RDI];
    r.r8 = s.gpr[R8];
    r.r9 = s.gpr[R9];
    r.r10 = s.gpr[R10];
    r.r11 = s.gpr[R11];
    r.r12 = s.gpr[R12];
    r.r13 = s.gpr[R13];
    r.r14 = s.gpr[R14];
    r.r15 = s.gpr[R15];
    r.rip = s.rip;
    r.rflags = s.rflags;
    return r;
}

void sregs_from_kvm(CpuState& s, const kvm_sregs& r)
{
    s.cs = from_kvm_segment(r.cs);
    s.ds = from_kvm_segment(r.ds);
    s.es = from_kvm_segment(r.es);
    s.fs = from_kvm_segment(r.fs);
    s.gs = from_kvm_segment(r.gs);
    s.ss = from_kvm_segment(r.ss);
    s.tr = from_kvm_segment(r.tr);
    s.ldtr = from_kvm_segment(r.ldt);
    s.gdt = from_kvm_dtable(r.gdt);
    s.idt = from_kvm_dtable(r.idt);
    s.cr0 = r.cr0;
    s.cr2 = r.cr2;
    s.cr3 = r.cr3;
    s.cr4 = r.cr4;
    s.cr8 = r.cr8;
    s.efer = r.efer;
    s.apic_base = r.apic_base;
}

kvm_sregs sregs_to_kvm(const CpuState& s)
{
    kvm_sregs r {};
    r.cs = to_kvm_segment(s.cs);
    r.ds = to_kvm_segment(s.ds);
    r.es = to_kvm_segment(s.es);
    r.fs = to_kvm_segment(s.fs);
    r.gs = to_kvm_segment(s.gs);
    r.ss = to_kvm_segment(s.ss);
    r.tr = to_kvm_segment(s.tr);
    r.ldt = to_kvm_segment(s.ldtr);
    r.gdt = to_kvm_dtable(s.gdt);
    r.idt = to_kvm_dtable(s.idt);
    r.cr0 = s.cr0;
    r.cr2 = s.cr2;
    r.cr3 = s.cr3;
    r.cr4 = s.cr4;
    r.cr8 = s.cr8;
    r.efer = s.efer;
    r.apic_base = s.apic_base;
    // interrupt_bitmap stays clear: pending interrupts travel in the events.
    return r;
}

void events_from_kvm(CpuState& s, const kvm_vcpu_events& e)
{
    auto& p = s.events;
    p.exception_pending = e.exception.pending;
    p.exception_injected = e.exception.injected;
    p.exception_nr = e.exception.nr;
    p.exception_has_error_code = e.exception.has_error_code;
    p.exception_error_code = e.exception.error_code;
    p.interrupt_injected = e.interrupt.injected;
    p.interrupt_nr = e.interrupt.nr;
    p.interrupt_shadow = e.interrupt.shadow;
    p.nmi_injected = e.nmi.injected;
    p.nmi_pending = e.nmi.pending;
    p.nmi_masked = e.nmi.masked;
    p.sipi_vector = static_cast<uint8_t>(e.sipi_vector);
}

kvm_vcpu_events events_to_kvm(const CpuState& s)
{
    const auto& p = s.events;
    kvm_vcpu_events e {};
    e.exception.pending = p.exception_pending;
    e.exception.injected = p.exception_injected;
    e.exception.nr = p.exception_nr;
    e.exception.has_error_code = p.exception_has_error_code;
    e.exception.error_code = p.exception_error_code;
    e.interrupt.injected = p.interrupt_injected;
    e.interrupt.nr = p.interrupt_nr;
    e.interrupt.shadow = p.interrupt_shadow;
    e.nmi.injected = p.nmi_injected;
    e.nmi.pending = p.nmi_pending;
    e.nmi.masked = p.nmi_masked;
    e.sipi_vector = p.sipi_vector;
    e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW;
    return e;
}

} // namespace

SegmentReg from_kvm_segment(const kvm_segment& s)
{
    SegmentReg out;
    out.base = s.base;
    out.limit = s.limit;
    out.selector = s.selector;
    out.type = s.type;
    out.present = s.present;
    out.dpl = s.dpl;
    out.db = s.db;
    out.s = s.s;
    out.l = s.l;
    out.g = s.g;
    out.avl = s.avl;
    out.unusable = s.unusable;
    return out;
}

kvm_segment to_kvm_segment(const SegmentReg& s)
{
    kvm_segment out {};
    out.base = s.base;
    out.limit = s.limit;
    out.selector = s.selector;
    out.type = s.type;
    out.present = s.present;
    out.dpl = s.dpl;
    out.db = s.db;
    out.s = s.s;
    out.l = s.l;
    out.g = s.g;
    out.avl = s.avl;
    out.unusable = s.unusable;
    return out;
}

Result<CpuState> read_kvm_state(const KvmStateIo& io)
{
    CpuState s;
    int fd = io.vcpu_fd;
    // The MP state comes first: KVM_GET_MP_STATE makes KVM act on an INIT or SIPI that another
    // vCPU sent while this one was out of KVM_RUN, which resets or redirects this vCPU. Registers
    // read before it would describe the CPU from before the INIT/SIPI, and writing them back
    // later would start an AP at the reset vector.
    kvm_mp_state mp {};
    TRY(vcpu_ioctl(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE"));
    switch (mp.mp_state) {
    case KVM_MP_STATE_UNINITIALIZED: s.mp_state = MpState::Uninitialized; break;
    case KVM_MP_STATE_INIT_RECEIVED: s.mp_state = MpState::InitReceived; break;
    case KVM_MP_STATE_HALTED: s.mp_state = MpState::Halted; break;
    default: s.mp_state = MpState::Runnable; break;
    }

    kvm_regs regs {};
    TRY(vcpu_ioctl(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS"));
    regs_from_kvm(s, regs);
    kvm_sregs sregs {};
    TRY(vcpu_ioctl(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS"));
    sregs_from_kvm(s, sregs);
    kvm_vcpu_events events {};
    TRY(vcpu_ioctl(fd, KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS"));
    events_from_kvm(s, events);

    kvm_sys::Xsave xsave {};
    static_assert(sizeof(xsave.region) == sizeof(s.xsave));
    TRY(vcpu_ioctl(fd, kvm_sys::kGetXsave, &xsave, "KVM_GET_XSAVE"));
    std::memcpy(s.xsave.data(), xsave.region, sizeof(xsave.region));

    kvm_xcrs xcrs {};
    TRY(vcpu_ioctl(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS"));
    for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; ++i)
        if (xcrs.xcrs[i].xcr == 0)
            s.xcr0 = xcrs.xcrs[i].value;

    kvm_debugregs dbg {};
    TRY(vcpu_ioctl(fd, KVM_GET_DEBUGREGS, &dbg, "KVM_GET_DEBUGREGS"));
    for (size_t i = 0; i < 4; ++i)
        s.dr[i] = dbg.db[i];
    s.dr6 = dbg.dr6;
    s.dr7 = dbg.dr7;

    kvm_lapic_state lapic {};
    static_assert(sizeof(lapic.regs) == sizeof(s.lapic));
    TRY(vcpu_ioctl(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC"));
    std::memcpy(s.lapic.data(), lapic.regs, sizeof(lapic.regs));

    // The TSC first, then the MSRs bound to MsrState fields.
    std::vector<uint32_t> indices { msr::kTsc };
    for (const auto& b : kMsrBindings)
        indices.push_back(b.index);
    auto values = TRY(read_msrs(fd, indices));
    if (values[0])
        s.tsc = *values[0];
    for (size_t i = 0; i < std::size(kMsrBindings); ++i)
        if (values[i + 1])
            s.msrs.*(kMsrBindings[i].field) = *values[i + 1];

    return s;
}

Result<void> write_kvm_state(const KvmStateIo& io, const CpuState& s)
{
    int fd = io.vcpu_fd;
    kvm_mp_state mp {};
    switch (s.mp_state) {
    case MpState::Uninitialized: mp.mp_state = KVM_MP_STATE_UNINITIALIZED; break;
    case MpState::InitReceived: mp.mp_state = KVM_MP_STATE_INIT_RECEIVED; break;
    case MpState::Halted: mp.mp_state = KVM_MP_STATE_HALTED; break;
    case MpState::Runnable: mp.mp_state = KVM_MP_STATE_RUNNABLE; break;
    }
    TRY(vcpu_ioctl(fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE"));

    kvm_regs regs = regs_to_kvm(s);
    TRY(vcpu_ioctl(fd, KVM_SET_REGS, &regs, "KVM_SET_REGS"));
    kvm_sregs sregs = sregs_to_kvm(s);
    TRY(vcpu_ioctl(fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"));

    kvm_sys::Xsave xsave {};
    std::memcpy(xsave.region, s.xsave.data(), sizeof(xsave.region));
    TRY(vcpu_ioctl(fd, kvm_sys::kSetXsave, &xsave, "KVM_SET_XSAVE"));
    kvm_xcrs xcrs {};
    xcrs.nr_xcrs = 1;
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = s.xcr0;
    TRY(vcpu_ioctl(fd, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS"));

    kvm_debugregs dbg {};
    for (size_t i = 0; i < 4; ++i)
        dbg.db[i] = s.dr[i];
    dbg.dr6 = s.dr6;
    dbg.dr7 = s.dr7;
    TRY(vcpu_ioctl(fd, KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS"));

    kvm_lapic_state lapic {};
    std::memcpy(lapic.regs, s.lapic.data(), sizeof(lapic.regs));
    TRY(vcpu_ioctl(fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC"));

    // TSC first, so the TSC deadline is interpreted against the restored counter; after the
    // LAPIC, whose LVT timer mode decides whether KVM takes a TSC deadline at all. A host-side
    // TSC write sets KVM's TSC offset so that the guest's TSC continues from `s.tsc` (and
    // KVM's TSC synchronisation keeps the vCPUs of one restore in step).
    const MsrState defaults;
    std::vector<kvm_msr_entry> entries;
    entries.push_back(kvm_msr_entry { msr::kTsc, 0, s.tsc });
    std::vector<uint64_t> fresh { 0 }; // a fresh vCPU's TSC
    for (const auto& b : kMsrBindings) {
        entries.push_back(kvm_msr_entry { b.index, 0, s.msrs.*(b.field) });
        fresh.push_back(defaults.*(b.field));
    }
    TRY(write_msrs(fd, entries, fresh));

    kvm_vcpu_events events = events_to_kvm(s);
    TRY(vcpu_ioctl(fd, KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS"));
    return {};
}

} // namespace vessel
