#include "engine/kvm/kvm_engine.h"

#include <cstring>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "base/log.h"

#include "arch/x86/layout.h"
#include "engine/kvm/kvm_machine.h"
#include "engine/kvm/kvm_sys.h"
#include "engine/kvm/kvm_vcpu.h"
#include "memory/guest_memory.h"

namespace vessel {

namespace {

// Where KVM puts its private real-mode TSS (3 pages) and identity map (1 page) on Intel hosts:
// inside the MMIO hole, below the IOAPIC and clear of every device window.
constexpr uint64_t kKvmTssAddr = 0xfffbd000;
constexpr uint64_t kKvmIdentityMapAddr = 0xfffbc000;

Result<int> check_extension(int fd, long cap)
{
    int r = ::ioctl(fd, KVM_CHECK_EXTENSION, cap);
    if (r < 0)
        return Error::from_errno(fmt::format("KVM_CHECK_EXTENSION({})", cap));
    return r;
}

} // namespace

uint32_t KvmEngine::host_max_vcpus()
{
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int max = ::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max <= 0)
        max = ::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    ::close(fd);
    return max > 0 ? static_cast<uint32_t>(max) : 1;
}

Result<std::unique_ptr<KvmEngine>> KvmEngine::create(const EngineConfig& config)
{
    std::unique_ptr<KvmEngine> engine(new KvmEngine());
    engine->m_config = config;
    engine->m_kvm_fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (engine->m_kvm_fd < 0)
        return Error::from_errno("cannot open /dev/kvm");
    int fd = engine->m_kvm_fd;

    int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return make_error("/dev/kvm speaks API version {}, Vessel needs {}", version, KVM_API_VERSION);

    for (auto [cap, what] :
        { std::pair { KVM_CAP_IRQCHIP, "in-kernel irqchip" }, std::pair { KVM_CAP_USER_MEMORY, "user memory regions" },
            std::pair { KVM_CAP_IMMEDIATE_EXIT, "immediate_exit" },
            std::pair { KVM_CAP_EXT_CPUID, "KVM_GET_SUPPORTED_CPUID" }, std::pair { KVM_CAP_PIT2, "in-kernel PIT" },
            std::pair { KVM_CAP_IRQ_ROUTING, "IRQ routing" } }) {
        if (TRY(check_extension(fd, cap)) <= 0)
            return make_error("/dev/kvm lacks {} (KVM_CAP {})", what, cap);
    }
    int max_vcpus = TRY(check_extension(fd, KVM_CAP_MAX_VCPUS));
    if (max_vcpus <= 0)
        max_vcpus = TRY(check_extension(fd, KVM_CAP_NR_VCPUS));
    engine->m_max_vcpus = static_cast<uint32_t>(std::max(max_vcpus, 1));
    if (config.vcpus == 0 || config.vcpus > engine->m_max_vcpus)
        return make_error("KVM supports 1 to {} vCPUs here, {} requested", engine->m_max_vcpus, config.vcpus);

    int sync = TRY(check_extension(fd, KVM_CAP_SYNC_REGS));
    constexpr int kWantedSync = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    engine->m_sync_regs = (sync & kWantedSync) == kWantedSync;
    engine->m_tsc_control = TRY(check_extension(fd, KVM_CAP_TSC_CONTROL)) > 0;
    int xsave2 = TRY(check_extension(fd, KVM_CAP_XSAVE2));
    engine->m_xsave_size = xsave2 > 4096 ? static_cast<uint32_t>(xsave2) : 4096;

    int mmap_size = ::ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size <= 0)
        return Error::from_errno("KVM_GET_VCPU_MMAP_SIZE");
    engine->m_run_mmap_size = static_cast<size_t>(mmap_size);

    // The host's supported CPUID: grow the buffer until KVM stops returning E2BIG.
    for (uint32_t n = 128; n <= 4096; n *= 2) {
        kvm_sys::FlexBuffer<kvm_sys::CpuidHeader, kvm_cpuid_entry2> cpuid(n);
        if (::ioctl(fd, kvm_sys::kGetSupportedCpuid, cpuid.data()) == 0) {
            engine->m_supported_cpuid.entries.assign(cpuid.entries(), cpuid.entries() + cpuid.count());
            break;
        }
        if (errno != E2BIG)
            return Error::from_errno("KVM_GET_SUPPORTED_CPUID");
    }
    if (engine->m_supported_cpuid.entries.empty())
        return make_error("KVM_GET_SUPPORTED_CPUID returned no entries");

    engine->m_vm_fd = ::ioctl(fd, KVM_CREATE_VM, 0);
    if (engine->m_vm_fd < 0)
        return Error::from_errno("KVM_CREATE_VM");
    int vm = engine->m_vm_fd;

    // Intel needs these two private areas for real-mode emulation; harmless elsewhere.
    if (::ioctl(vm, KVM_SET_TSS_ADDR, kKvmTssAddr) < 0)
        return Error::from_errno("KVM_SET_TSS_ADDR");
    uint64_t identity = kKvmIdentityMapAddr;
    if (::ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
        log_debug("KVM_SET_IDENTITY_MAP_ADDR failed ({}); continuing", std::strerror(errno));

    if (::ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        return Error::from_errno("KVM_CREATE_IRQCHIP");
    kvm_pit_config pit {};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (::ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
        return Error::from_errno("KVM_CREATE_PIT2");
    TRY(engine->setup_irq_routing());
    return engine;
}

// GSI routing like a PC with the usual IRQ0 → GSI 2 override (what the MADT and MP table say):
// ISA IRQs 0-15 drive the 8259 pair, GSIs 0-23 drive the IOAPIC pin of the same number except
// that GSI 0 (the PIT) lands on pin 2.
Result<void> KvmEngine::setup_irq_routing()
{
    std::vector<kvm_irq_routing_entry> routes;
    for (uint32_t irq = 0; irq < 16; ++irq) {
        if (irq == 2)
            continue; // the cascade
        kvm_irq_routing_entry e {};
        e.gsi = irq;
        e.type = KVM_IRQ_ROUTING_IRQCHIP;
        e.u.irqchip.irqchip = irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        e.u.irqchip.pin = irq % 8;
        routes.push_back(e);
    }
    for (uint32_t gsi = 0; gsi < layout::kIoapicPins; ++gsi) {
        if (gsi == 2)
            continue; // pin 2 is fed by GSI 0
        kvm_irq_routing_entry e {};
        e.gsi = gsi;
        e.type = KVM_IRQ_ROUTING_IRQCHIP;
        e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e.u.irqchip.pin = gsi == 0 ? 2 : gsi;
        routes.push_back(e);
    }
    kvm_sys::FlexBuffer<kvm_sys::RoutingHeader, kvm_irq_routing_entry> table(routes.size());
    std::copy(routes.begin(), routes.end(), table.entries());
    if (::ioctl(m_vm_fd, kvm_sys::kSetGsiRouting, table.data()) < 0)
        return Error::from_errno("KVM_SET_GSI_ROUTING");
    return {};
}

KvmEngine::~KvmEngine()
{
    if (m_vm_fd >= 0)
        ::close(m_vm_fd);
    if (m_kvm_fd >= 0)
        ::close(m_kvm_fd);
}

Result<void> KvmEngine::map_memory(const GuestMemory& memory)
{
    for (const auto& region : memory.regions()) {
        kvm_userspace_memory_region r {};
        r.slot = static_cast<uint32_t>(m_slots.size());
        r.flags = m_dirty_tracking ? KVM_MEM_LOG_DIRTY_PAGES : 0;
        r.guest_phys_addr = region.guest_base;
        r.memory_size = region.size;
        r.userspace_addr = reinterpret_cast<uint64_t>(region.host);
        if (::ioctl(m_vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return Error::from_errno(fmt::format(
                "KVM_SET_USER_MEMORY_REGION (slot {}, {:#x}+{:#x})", r.slot, r.guest_phys_addr, r.memory_size));
        m_slots.push_back(r);
    }
    return {};
}

Result<std::unique_ptr<Vcpu>> KvmEngine::create_vcpu(uint32_t id, IoHandler& io)
{
    auto vcpu = TRY(KvmVcpu::create(*this, id, io));
    return std::unique_ptr<Vcpu>(std::move(vcpu));
}

void KvmEngine::add_vcpu(KvmVcpu* vcpu)
{
    std::lock_guard lock(m_vcpus_mutex);
    m_vcpus.push_back(vcpu);
}

void KvmEngine::remove_vcpu(KvmVcpu* vcpu)
{
    std::lock_guard lock(m_vcpus_mutex);
    std::erase(m_vcpus, vcpu);
}

KvmVcpu* KvmEngine::find_vcpu(uint32_t id)
{
    std::lock_guard lock(m_vcpus_mutex);
    for (KvmVcpu* vcpu : m_vcpus)
        if (vcpu->id() == id)
            return vcpu;
    return nullptr;
}

Result<void> KvmEngine::set_irq_line(uint32_t gsi, bool level)
{
    kvm_irq_level irq {};
    irq.irq = gsi;
    irq.level = level ? 1 : 0;
    if (::ioctl(m_vm_fd, KVM_IRQ_LINE, &irq) < 0)
        return Error::from_errno(fmt::format("KVM_IRQ_LINE(gsi {}, {})", gsi, level));
    return {};
}

Result<bool> KvmEngine::add_mmio_notifier(uint64_t gpa, uint32_t len, std::optional<uint64_t> value, int fd)
{
    if (::ioctl(m_kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD) <= 0)
        return false;
    kvm_ioeventfd ev {};
    ev.addr = gpa;
    ev.len = len;
    ev.fd = fd;
    if (value) {
        ev.datamatch = *value;
        ev.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    if (::ioctl(m_vm_fd, KVM_IOEVENTFD, &ev) < 0)
        return Error::from_errno(fmt::format("KVM_IOEVENTFD({:#x}, {} bytes)", gpa, len));
    return true;
}

Result<bool> KvmEngine::add_irq_notifier(uint32_t gsi, int fd)
{
    if (::ioctl(m_kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) <= 0)
        return false;
    // Without KVM_IRQFD_FLAG_RESAMPLE an irqfd raises and lowers the line: an edge.
    kvm_irqfd irqfd {};
    irqfd.fd = static_cast<uint32_t>(fd);
    irqfd.gsi = gsi;
    if (::ioctl(m_vm_fd, KVM_IRQFD, &irqfd) < 0)
        return Error::from_errno(fmt::format("KVM_IRQFD(gsi {})", gsi));
    return true;
}

void KvmEngine::pause_clock(bool paused)
{
    if (paused) {
        kvm_clock_data clock {};
        m_clock_saved = ::ioctl(m_vm_fd, KVM_GET_CLOCK, &clock) == 0;
        if (m_clock_saved) {
            m_saved_clock = clock;
            m_saved_clock_host_ns = host_monotonic_ns();
        } else {
            log_warn("KVM_GET_CLOCK: {}; the guest's clock will count the pause", std::strerror(errno));
        }
        return;
    }
    if (!m_clock_saved)
        return;
    kvm_clock_data clock {};
    clock.clock = m_saved_clock.clock;
    if (::ioctl(m_vm_fd, KVM_SET_CLOCK, &clock) != 0)
        log_warn("KVM_SET_CLOCK: {}; the guest's clock counts the pause", std::strerror(errno));
    m_clock_saved = false;
}

} // namespace vessel
