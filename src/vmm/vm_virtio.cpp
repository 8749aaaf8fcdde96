// The VM's virtio devices: one virtio-mmio window each (layout::kVirtioMmioBase + i * 4 KiB),
// an IOAPIC pin each, and a DSDT entry each (built here, emitted by load_guest()).
#include <arpa/inet.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "arch/x86/acpi.h"
#include "arch/x86/layout.h"
#include "base/log.h"
#include "devices/virtio/balloon.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/console.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/vsock.h"
#include "mmds/stack.h"
#include "vmm/console.h"
#include "vmm/vm.h"

namespace vessel {

namespace {

// IOAPIC pins for virtio devices: 16-23 first (no ISA device there), then the ISA pins no
// legacy device of this machine uses (0-2 timer/cascade, 1 keyboard, 4 COM1, 8 RTC are taken;
// 3 is left for a COM2).
constexpr std::array<uint32_t, 17> kVirtioGsis { 16, 17, 18, 19, 20, 21, 22, 23, 5, 6, 7, 9, 10, 11, 12, 14, 15 };

// The MMDS stack of one interface, on the VMM's data store and tokens (shared by every interface
// and the API, which may change them while the VM runs).
Result<std::unique_ptr<mmds::Stack>> make_mmds_stack(const MmdsConfig& config, const Vm::Services& services)
{
    if (!services.mmds || !services.mmds_tokens)
        return make_error("MMDS is configured but the VMM provides no data store");
    // Validated by PUT /mmds/config (a link-local IPv4 address); parsed again here, not trusted.
    in_addr address {};
    if (::inet_pton(AF_INET, config.ipv4_address.c_str(), &address) != 1)
        return make_error("MMDS: {} is not an IPv4 address", config.ipv4_address);
    mmds::StackConfig stack_config;
    std::memcpy(stack_config.ipv4.data(), &address.s_addr, 4); // network order, as on the wire
    return std::make_unique<mmds::Stack>(services.mmds, services.mmds_tokens, stack_config);
}

} // namespace

Result<void> Vm::build_virtio_devices()
{
    std::vector<std::shared_ptr<virtio::VirtioDevice>> devices;

    // Order decides the guest's probe order: disks first, so the first --disk is /dev/vda.
    // Each disk's rate_limiter travels in its DiskConfig; io_engine "Sync" (Firecracker's name)
    // forces synchronous calls on the I/O thread, anything else lets io_uring do the I/O.
    for (const DiskConfig& disk : m_config.disks) {
        auto mode = disk.io_engine == "Sync" ? virtio::BlkDevice::IoMode::Sync : virtio::BlkDevice::IoMode::Auto;
        auto blk = TRY(virtio::BlkDevice::open(disk, mode));
        devices.push_back(std::shared_ptr<virtio::VirtioDevice>(std::move(blk)));
    }

    // virtio-net, one per --net (eth0, eth1, ...). The tap is opened here, at start-up: no
    // /dev/net/tun, no permission or a busy tap is an error naming the tap.
    for (size_t i = 0; i < m_config.nets.size(); ++i) {
        const NetConfig& net = m_config.nets[i];
        auto tap = TRY_CTX(TapBackend::open(net.tap), "--net");
        if (tap->created())
            log_warn("--net: created tap {} (up, no address: add it to a bridge or give it one; it goes away when "
                     "Vessel exits)",
                tap->ifname());
        auto mac = net.mac.value_or(virtio::NetDevice::default_mac(tap->ifname(), i));
        auto device = std::make_shared<virtio::NetDevice>(
            std::move(tap), mac, virtio::NetDevice::Mode::Thread, net.rx_rate_limiter, net.tx_rate_limiter);
        // PUT /mmds/config names the interfaces that answer the metadata service; the others
        // send frames for its address to the tap like any other.
        if (m_config.mmds
            && std::ranges::find(m_config.mmds->network_interfaces, net.id) != m_config.mmds->network_interfaces.end())
            device->set_mmds(TRY(make_mmds_stack(*m_config.mmds, m_services)));
        devices.push_back(std::move(device));
    }
    if (m_config.rng)
        devices.push_back(std::make_shared<virtio::RngDevice>(m_config.rng_rate_limiter));
    if (m_config.vsock)
        devices.push_back(TRY(virtio::VsockDevice::create(m_config.vsock->cid, m_config.vsock->socket)));
    if (m_config.console == ConsoleKind::Virtio) {
        // stdin goes here instead of COM1 (the event loop feeds m_console_input); the guest's
        // hvc0 output goes to stdout. COM1 stays, with its output on stdout as well.
        auto console = std::make_shared<virtio::ConsoleDevice>(
            [this](std::span<const uint8_t> bytes) { m_console_sink(bytes); });
        m_console_input = console.get();
        devices.push_back(console);
    }
    if (m_config.balloon)
        devices.push_back(std::make_shared<virtio::BalloonDevice>(m_config.balloon_target_bytes));

    if (devices.size() > kVirtioGsis.size())
        return make_error("{} virtio devices requested, at most {} fit", devices.size(), kVirtioGsis.size());
    for (size_t i = 0; i < devices.size(); ++i) {
        uint64_t base = layout::kVirtioMmioBase + i * layout::kVirtioMmioSize;
        uint32_t gsi = kVirtioGsis[i];
        IrqLine irq(gsi, [this](uint32_t g, bool level) { set_irq(g, level); });
        auto transport = std::make_shared<virtio::MmioTransport>(devices[i], m_memory, std::move(irq));
        TRY(m_mmio_bus.insert(transport, base, layout::kVirtioMmioSize));
        m_virtio.push_back(transport);
        m_virtio_acpi.push_back(virtio_mmio_acpi_device(
            static_cast<uint32_t>(i), base, layout::kVirtioMmioSize, gsi, AcpiIrqTrigger::Edge));
        log_debug("virtio-{} at {:#x}, GSI {}", devices[i]->name(), base, gsi);
    }
    return {};
}

Result<void> Vm::wire_virtio_fast_paths()
{
    for (size_t i = 0; i < m_virtio.size(); ++i) {
        auto& transport = *m_virtio[i];
        uint64_t notify = layout::kVirtioMmioBase + i * layout::kVirtioMmioSize + virtio::mmio_reg::kQueueNotify;
        for (uint16_t q = 0; q < transport.queue_count(); ++q) {
            int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (fd < 0)
                return Error::from_errno("eventfd");
            auto added = m_engine->add_mmio_notifier(notify, 4, q, fd);
            if (!added.ok() || !added.value()) {
                ::close(fd);
                if (!added.ok())
                    return added.error();
                return {}; // the engine has no such fast path: notifications take the bus
            }
            m_queue_notifiers.push_back({ fd, &transport, q, 0 });
        }
        uint32_t gsi = m_virtio_acpi[i].interrupts.at(0).gsi;
        int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0)
            return Error::from_errno("eventfd");
        auto added = m_engine->add_irq_notifier(gsi, fd);
        if (!added.ok() || !added.value()) {
            ::close(fd);
            if (!added.ok())
                return added.error();
            continue;
        }
        m_irq_notifiers.emplace_back(gsi, fd);
    }
    if (!m_queue_notifiers.empty() || !m_irq_notifiers.empty())
        log_debug("virtio: {} queue notifiers, {} interrupt notifiers in the engine", m_queue_notifiers.size(),
            m_irq_notifiers.size());
    return {};
}

} // namespace vessel
