#include "engine/kvm/kvm_vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <mutex>

#include "base/log.h"

#include "engine/kvm/kvm_cpuid.h"
#include "engine/kvm/kvm_engine.h"
#include "engine/kvm/kvm_machine.h"
#include "engine/kvm/kvm_state.h"
#include "engine/kvm/kvm_sys.h"

namespace vessel {

namespace {

int kick_signal()
{
    return SIGRTMIN + 1;
}

void kick_handler(int)
{
}

const char* exit_reason_name(uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "unknown";
    case KVM_EXIT_EXCEPTION: return "exception";
    case KVM_EXIT_HYPERCALL: return "hypercall";
    case KVM_EXIT_DEBUG: return "debug";
    case KVM_EXIT_FAIL_ENTRY: return "fail entry";
    case KVM_EXIT_INTERNAL_ERROR: return "internal error";
    case KVM_EXIT_NMI: return "nmi";
    default: return "unhandled";
    }
}

const char* internal_error_name(uint32_t suberror)
{
    switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION: return "instruction emulation failed";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering an exception";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "exit while delivering an event";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected exit reason";
    default: return "unknown";
    }
}

} // namespace

void KvmVcpu::install_kick_signal()
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa { };
        sa.sa_handler = kick_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
        ::sigaction(kick_signal(), &sa, nullptr);
    });
}

KvmVcpu::KvmVcpu(KvmEngine& engine, uint32_t id, IoHandler& io)
    : m_engine(engine)
    , m_id(id)
    , m_io(io)
{
}

Result<std::unique_ptr<KvmVcpu>> KvmVcpu::create(KvmEngine& engine, uint32_t id, IoHandler& io)
{
    install_kick_signal();
    std::unique_ptr<KvmVcpu> vcpu(new KvmVcpu(engine, id, io));
    vcpu->m_fd = ::ioctl(engine.vm_fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
    if (vcpu->m_fd < 0)
        return Error::from_errno(fmt::format("KVM_CREATE_VCPU({})", id));
    void* run = ::mmap(nullptr, engine.run_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->m_fd, 0);
    if (run == MAP_FAILED)
        return Error::from_errno(fmt::format("mmap of vCPU {} run area", id));
    vcpu->m_run = static_cast<kvm_run*>(run);
    engine.add_vcpu(vcpu.get());
    TRY_CTX(vcpu->set_tsc_khz(engine.wanted_tsc_khz(), KeepTsc::No), fmt::format("vCPU {}", id));
    TRY_CTX(vcpu->setup_cpuid(), fmt::format("vCPU {}", id));
    TRY_CTX(vcpu->setup_lapic_lints(), fmt::format("vCPU {}", id));
    if (engine.has_sync_regs())
        vcpu->m_run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    return vcpu;
}

KvmVcpu::~KvmVcpu()
{
    m_engine.remove_vcpu(this);
    if (m_run)
        ::munmap(m_run, m_engine.run_mmap_size());
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<void> KvmVcpu::setup_cpuid()
{
    auto entries = build_guest_cpuid(m_engine.supported_cpuid().entries, m_id, m_engine.vcpu_count());
    kvm_sys::FlexBuffer<kvm_sys::CpuidHeader, kvm_cpuid_entry2> cpuid(entries.size());
    std::copy(entries.begin(), entries.end(), cpuid.entries());
    if (::ioctl(m_fd, kvm_sys::kSetCpuid2, cpuid.data()) < 0)
        return Error::from_errno("KVM_SET_CPUID2");
    m_cpuid = std::move(entries);
    return {};
}

Result<void> KvmVcpu::set_cpuid_table(const CpuidTable& table)
{
    if (m_ran_once)
        return make_error("vCPU {}: KVM takes a new CPUID table only before the vCPU first runs", m_id);
    std::vector<kvm_cpuid_entry2> entries;
    for (const CpuidEntry& e : table) {
        kvm_cpuid_entry2 k {};
        k.function = e.function;
        k.index = e.index;
        k.flags = e.significant_index ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
        k.eax = e.eax;
        k.ebx = e.ebx;
        k.ecx = e.ecx;
        k.edx = e.edx;
        entries.push_back(k);
    }
    kvm_sys::FlexBuffer<kvm_sys::CpuidHeader, kvm_cpuid_entry2> cpuid(entries.size());
    std::copy(entries.begin(), entries.end(), cpuid.entries());
    if (::ioctl(m_fd, kvm_sys::kSetCpuid2, cpuid.data()) < 0)
        return Error::from_errno(fmt::format("KVM_SET_CPUID2 with the snapshot's {} CPUID entries", entries.size()));
    m_cpuid = std::move(entries);
    return {};
}

Result<CpuidTable> KvmVcpu::cpuid_table()
{
    // KVM's own copy also carries the bits it updates at run time (OSXSAVE, the APIC bit, the
    // XSAVE area size), i.e. exactly what the guest's CPUID returns now.
    for (size_t n = std::max<size_t>(m_cpuid.size(), 64); n <= 4096; n *= 2) {
        kvm_sys::FlexBuffer<kvm_sys::CpuidHeader, kvm_cpuid_entry2> cpuid(n);
        if (::ioctl(m_fd, kvm_sys::kGetCpuid2, cpuid.data()) == 0)
            return cpuid_table_from_kvm(cpuid.entries(), cpuid.count());
        if (errno != E2BIG)
            break;
    }
    return cpuid_table_from_kvm(m_cpuid.data(), m_cpuid.size());
}

uint64_t KvmVcpu::tsc_khz() const
{
    int khz = ::ioctl(m_fd, KVM_GET_TSC_KHZ, 0);
    return khz > 0 ? static_cast<uint64_t>(khz) : 0;
}

Result<void> KvmVcpu::set_tsc_khz(uint64_t khz, KeepTsc keep)
{
    if (khz == 0)
        return {};
    uint64_t current = tsc_khz();
    if (khz == current)
        return {};
    if (!m_engine.has_tsc_control()) {
        // Without TSC scaling KVM presents the host's rate; a request within KVM's own tolerance
        // of it is that rate (KVM_SET_TSC_KHZ would accept it and scale nothing).
        if (current != 0 && tsc_khz_compatible(khz, current))
            return {};
        if (current == 0)
            return make_error("KVM cannot present a {} kHz TSC: it reports no TSC frequency here "
                              "(no KVM_CAP_GET_TSC_KHZ) and cannot scale the TSC (no KVM_CAP_TSC_CONTROL)",
                khz);
        return make_error("KVM cannot present a {} kHz TSC: this host's TSC runs at {} kHz and KVM cannot scale "
                          "it here (no KVM_CAP_TSC_CONTROL)",
            khz, current);
    }
    if (khz > UINT32_MAX)
        return make_error("a TSC of {} kHz is out of KVM's range (the host's runs at {} kHz)", khz, current);
    uint64_t tsc = 0;
    if (keep == KeepTsc::Yes)
        tsc = TRY(read_msr(msr::kTsc));
    if (::ioctl(m_fd, KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) < 0)
        return make_error("KVM cannot present a {} kHz TSC (the host's runs at {} kHz): KVM_SET_TSC_KHZ: {}", khz,
            current, std::strerror(errno));
    if (keep == KeepTsc::Yes)
        TRY(write_msr(msr::kTsc, tsc));
    return {};
}

Result<uint64_t> KvmVcpu::read_msr(uint32_t index)
{
    kvm_sys::FlexBuffer<kvm_sys::MsrsHeader, kvm_msr_entry> msrs(1);
    msrs.entries()[0].index = index;
    int r = ::ioctl(m_fd, kvm_sys::kGetMsrs, msrs.data());
    if (r < 0)
        return Error::from_errno(fmt::format("KVM_GET_MSRS({:#x}) on vCPU {}", index, m_id));
    if (r != 1)
        return make_error("KVM_GET_MSRS: vCPU {} has no MSR {:#x}", m_id, index);
    return msrs.entries()[0].data;
}

Result<void> KvmVcpu::write_msr(uint32_t index, uint64_t value)
{
    kvm_sys::FlexBuffer<kvm_sys::MsrsHeader, kvm_msr_entry> msrs(1);
    msrs.entries()[0].index = index;
    msrs.entries()[0].data = value;
    int r = ::ioctl(m_fd, kvm_sys::kSetMsrs, msrs.data());
    if (r < 0)
        return Error::from_errno(fmt::format("KVM_SET_MSRS({:#x}) on vCPU {}", index, m_id));
    if (r != 1)
        return make_error("KVM_SET_MSRS: vCPU {} refused MSR {:#x} = {:#x}", m_id, index, value);
    return {};
}

// LINT0 as ExtINT (the 8259 feeds the BSP before the guest switches to the IOAPIC) and LINT1 as
// NMI, as a PC BIOS leaves them.
Result<void> KvmVcpu::setup_lapic_lints()
{
    kvm_lapic_state lapic {};
    if (::ioctl(m_fd, KVM_GET_LAPIC, &lapic) < 0)
        return Error::from_errno("KVM_GET_LAPIC");
    auto set_lvt = [&](size_t offset, uint32_t mode) {
        uint32_t value;
        std::memcpy(&value, lapic.regs + offset, 4);
        value = (value & ~0x700u) | mode;
        std::memcpy(lapic.regs + offset, &value, 4);
    };
    set_lvt(0x350, 0x700); // LVT LINT0: ExtINT
    set_lvt(0x360, 0x400); // LVT LINT1: NMI
    if (::ioctl(m_fd, KVM_SET_LAPIC, &lapic) < 0)
        return Error::from_errno("KVM_SET_LAPIC");
    return {};
}

void KvmVcpu::kick()
{
    // SAFETY: immediate_exit lives in the shared run page for the vCPU's lifetime; KVM reads it
    // on entry to KVM_RUN, the signal interrupts a KVM_RUN already in progress.
    __atomic_store_n(&m_run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (m_running.load(std::memory_order_seq_cst))
        ::pthread_kill(m_thread.load(), kick_signal());
}

Result<VcpuExit> KvmVcpu::run()
{
    m_thread.store(::pthread_self());
    m_running.store(true, std::memory_order_seq_cst);
    struct RunningGuard {
        std::atomic<bool>& flag;
        ~RunningGuard() { flag.store(false); }
    } guard { m_running };

    if (!m_ran_once) {
        m_ran_once = true;
        // Start-up benchmarks compare this with the time the process was launched.
        timespec now {};
        ::clock_gettime(CLOCK_REALTIME, &now);
        log_debug("vCPU {}: first KVM_RUN at realtime {}.{:09}", m_id, now.tv_sec, now.tv_nsec);
    }
    for (;;) {
        int r = ::ioctl(m_fd, KVM_RUN, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                __atomic_store_n(&m_run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                return VcpuExit { VcpuExitKind::Kicked, {} };
            }
            return Error::from_errno(fmt::format("KVM_RUN on vCPU {}", m_id));
        }
        switch (m_run->exit_reason) {
        case KVM_EXIT_IO:
            (m_run->io.direction == KVM_EXIT_IO_OUT ? m_exits_io_out : m_exits_io_in).add();
            handle_io();
            break;
        case KVM_EXIT_MMIO:
            (m_run->mmio.is_write ? m_exits_mmio_write : m_exits_mmio_read).add();
            handle_mmio();
            break;
        case KVM_EXIT_INTR:
            m_exits_other.add();
            __atomic_store_n(&m_run->immediate_exit, 0, __ATOMIC_SEQ_CST);
            return VcpuExit { VcpuExitKind::Kicked, {} };
        case KVM_EXIT_HLT: return VcpuExit { VcpuExitKind::Halted, {} };
        case KVM_EXIT_SHUTDOWN:
            return VcpuExit { VcpuExitKind::Shutdown,
                fmt::format("vCPU {} shut down (triple fault){}", m_id, exit_location()) };
        case KVM_EXIT_SYSTEM_EVENT:
            switch (m_run->system_event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return VcpuExit { VcpuExitKind::PowerOff, {} };
            case KVM_SYSTEM_EVENT_RESET: return VcpuExit { VcpuExitKind::Reset, {} };
            default:
                return VcpuExit { VcpuExitKind::InternalError,
                    fmt::format("vCPU {}: system event {}", m_id, m_run->system_event.type) };
            }
        case KVM_EXIT_FAIL_ENTRY:
            return VcpuExit { VcpuExitKind::InternalError,
                fmt::format("vCPU {}: VM entry failed (hardware reason {:#x}){}", m_id,
                    m_run->fail_entry.hardware_entry_failure_reason, exit_location()) };
        case KVM_EXIT_INTERNAL_ERROR:
            return VcpuExit { VcpuExitKind::InternalError,
                fmt::format("vCPU {}: KVM internal error, suberror {} ({}){}", m_id, m_run->internal.suberror,
                    internal_error_name(m_run->internal.suberror), exit_location()) };
        default:
            return VcpuExit { VcpuExitKind::InternalError,
                fmt::format("vCPU {}: {} KVM exit (reason {})", m_id, exit_reason_name(m_run->exit_reason),
                    m_run->exit_reason) };
        }
    }
}

VcpuStats KvmVcpu::stats() const
{
    VcpuStats s;
    s.exits_io_in = m_exits_io_in.get();
    s.exits_io_out = m_exits_io_out.get();
    s.exits_mmio_read = m_exits_mmio_read.get();
    s.exits_mmio_write = m_exits_mmio_write.get();
    s.exits_other = m_exits_other.get();
    return s;
}

void KvmVcpu::handle_io()
{
    auto& io = m_run->io;
    // SAFETY: KVM guarantees data_offset + size * count lies within the run mapping.
    uint8_t* data = reinterpret_cast<uint8_t*>(m_run) + io.data_offset;
    for (uint32_t i = 0; i < io.count; ++i) {
        std::span<uint8_t> bytes(data + i * io.size, io.size);
        if (io.direction == KVM_EXIT_IO_OUT)
            m_io.pio_write(io.port, bytes);
        else
            m_io.pio_read(io.port, bytes);
    }
}

void KvmVcpu::handle_mmio()
{
    auto& mmio = m_run->mmio;
    uint32_t len = std::min<uint32_t>(mmio.len, sizeof(mmio.data));
    if (mmio.is_write)
        m_io.mmio_write(mmio.phys_addr, std::span<const uint8_t>(mmio.data, len));
    else
        m_io.mmio_read(mmio.phys_addr, std::span<uint8_t>(mmio.data, len));
}

// Where the vCPU stood at this exit, for error messages: KVM_CAP_SYNC_REGS leaves the registers
// in the run area on every exit, so a triple fault or emulation failure names its RIP without
// extra ioctls.
std::string KvmVcpu::exit_location() const
{
    if (!m_engine.has_sync_regs())
        return {};
    const auto& regs = m_run->s.regs.regs;
    const auto& sregs = m_run->s.regs.sregs;
    return fmt::format(" at CS:RIP {:#x}:{:#x} (CS base {:#x}), CR0 {:#x}, EFER {:#x}", sregs.cs.selector, regs.rip,
        sregs.cs.base, sregs.cr0, sregs.efer);
}

Result<CpuState> KvmVcpu::get_state()
{
    KvmStateIo io { m_fd, m_engine.xsave_size() };
    return read_kvm_state(io);
}

Result<void> KvmVcpu::set_state(const CpuState& state)
{
    KvmStateIo io { m_fd, m_engine.xsave_size() };
    return write_kvm_state(io, state);
}

Result<void> KvmVcpu::inject_interrupt(uint8_t vector)
{
    kvm_interrupt irq {};
    irq.irq = vector;
    if (::ioctl(m_fd, KVM_INTERRUPT, &irq) < 0)
        return Error::from_errno(fmt::format("KVM_INTERRUPT vector {} on vCPU {}", vector, m_id));
    return {};
}

} // namespace vessel
