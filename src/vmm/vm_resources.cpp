#include "vmm/vm_resources.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "arch/x86/layout.h"
#include "cli/options.h"
#include "devices/virtio/tap.h"

namespace vessel {

namespace {

// Rust's io::Error text, which Firecracker's messages embed: "No such file or directory (os error 2)".
std::string os_error(int err)
{
    return fmt::format("{} (os error {})", std::strerror(err), err);
}

std::string mac_text(const std::array<uint8_t, 6>& mac)
{
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

// Can `path` be opened the way the device will open it? Returns errno (0: yes).
int probe_open(const std::string& path, int flags)
{
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ::close(fd);
    return 0;
}

} // namespace

VmResources::VmResources()
{
    m_config.mem_bytes = kApiDefaultMemMib << 20;
    m_config.cpus = 1;
    m_config.cmdline.clear();
    // Firecracker exits when the guest resets (reboot=k): so does a VM configured this way.
    m_config.on_reset = ResetAction::Exit;
}

Result<void> VmResources::update_machine_config(const MachineConfigUpdate& update)
{
    uint32_t vcpus = update.vcpu_count.value_or(m_config.cpus);
    uint64_t mem_mib = update.mem_size_mib.value_or(m_config.mem_bytes >> 20);
    bool huge = update.huge_pages ? *update.huge_pages == "2M" : m_config.hugepages;
    constexpr const char* kPrefix = "Machine config error: ";
    if (update.smt.value_or(false))
        return make_error("{}Vessel does not model simultaneous multithreading: smt must be false.", kPrefix);
    if (update.cpu_template && *update.cpu_template != "None")
        return make_error("{}Vessel does not model Firecracker's static CPU templates ({}): the guest sees the "
                          "engine's own CPUID model.",
            kPrefix, *update.cpu_template);
    if (update.huge_pages && *update.huge_pages != "None" && *update.huge_pages != "2M")
        return make_error("{}huge_pages \"{}\" is not supported by Vessel (None or 2M).", kPrefix, *update.huge_pages);
    if (vcpus == 0 || vcpus > kApiMaxVcpus)
        return make_error("{}The number of vCPUs must be greater than 0, less than {} and must be 1 or an even "
                          "number if SMT is enabled.",
            kPrefix, kApiMaxVcpus);
    if (mem_mib == 0 || (huge && mem_mib % 2 != 0))
        return make_error(
            "{}The memory size (MiB) is either 0, or not a multiple of the configured page size.", kPrefix);
    if ((mem_mib << 20) < layout::kMinRam)
        return make_error(
            "{}The memory size ({} MiB) is below Vessel's minimum of {} MiB.", kPrefix, mem_mib, layout::kMinRam >> 20);
    if (mem_mib > (host_memory_bytes() >> 20))
        return make_error("{}The memory size ({} MiB) is more than this host's {} MiB of RAM.", kPrefix, mem_mib,
            host_memory_bytes() >> 20);
    if (m_config.balloon && m_config.balloon_target_bytes > (mem_mib << 20))
        return make_error(
            "{}The memory size (MiB) is smaller than the previously set balloon device target size.", kPrefix);
    m_config.cpus = vcpus;
    m_config.mem_bytes = mem_mib << 20;
    m_config.hugepages = huge;
    if (update.track_dirty_pages)
        m_track_dirty_pages = *update.track_dirty_pages;
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_boot_source(const BootSourceConfig& boot)
{
    constexpr const char* kPrefix = "Boot source error: ";
    if (int err = probe_open(boot.kernel_image_path, O_RDONLY))
        return make_error("{}The kernel file cannot be opened: {}", kPrefix, os_error(err));
    if (boot.initrd_path) {
        if (int err = probe_open(*boot.initrd_path, O_RDONLY))
            return make_error("{}The initrd file cannot be opened due to invalid path or invalid permissions. {}",
                kPrefix, os_error(err));
    }
    std::string cmdline = boot.boot_args.value_or(kDefaultCmdline);
    if (cmdline.size() + 1 > layout::kCmdlineMax)
        return make_error("{}The kernel command line is invalid: it is {} bytes long, the limit is {}", kPrefix,
            cmdline.size(), layout::kCmdlineMax - 1);
    if (cmdline.find('\0') != std::string::npos)
        return make_error("{}The kernel command line is invalid: it contains a NUL byte", kPrefix);
    m_boot_source = boot;
    m_config.kernel = boot.kernel_image_path;
    m_config.initrd = boot.initrd_path.value_or("");
    m_config.cmdline = cmdline;
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_drive(const DiskConfig& drive)
{
    constexpr const char* kPrefix = "Drive config error: ";
    auto existing = std::find_if(
        m_config.disks.begin(), m_config.disks.end(), [&](const DiskConfig& d) { return d.id == drive.id; });
    if (drive.root) {
        for (auto& d : m_config.disks)
            if (d.root && d.id != drive.id)
                return make_error("{}A root block device already exists!", kPrefix);
    }
    if (drive.path.empty())
        return make_error("{}Invalid block config.", kPrefix);
    if (int err = probe_open(drive.path, drive.read_only ? O_RDONLY : O_RDWR))
        return make_error("{}Unable to create the virtio block device: Virtio backend error: Error manipulating the "
                          "backing file: {} {}",
            kPrefix, os_error(err), drive.path);
    DiskConfig d = drive;
    if (d.serial.empty())
        d.serial = d.id; // GET_ID answers the drive's id, as Firecracker does
    if (existing != m_config.disks.end()) {
        *existing = d;
        // A drive that becomes the root moves to the front (it is /dev/vda).
        if (d.root && existing != m_config.disks.begin())
            std::rotate(m_config.disks.begin(), existing, existing + 1);
    } else if (d.root) {
        m_config.disks.insert(m_config.disks.begin(), d);
    } else {
        m_config.disks.push_back(d);
    }
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_net(const NetConfig& net)
{
    constexpr const char* kPrefix = "Network config error: ";
    if (net.mac) {
        for (auto& n : m_config.nets)
            if (n.id != net.id && n.mac && *n.mac == *net.mac)
                return make_error("{}The MAC address is already in use: {}", kPrefix, mac_text(*net.mac));
    }
    for (auto& n : m_config.nets)
        if (n.id != net.id && n.tap == net.tap)
            return make_error("{}Could not create the network device: Open tap device failed: the tap {} is already "
                              "used by interface {}",
                kPrefix, net.tap, n.id);
    if (net.tap.empty() || net.tap.size() > 15)
        return make_error(
            "{}Could not create the network device: Open tap device failed: Invalid interface name", kPrefix);
    // Firecracker opens the tap here; so do we (and close it: the device opens it at start),
    // so that a missing /dev/net/tun or a tap in use elsewhere is reported now.
    auto tap = TapBackend::open(net.tap);
    if (!tap.ok())
        return make_error(
            "{}Could not create the network device: Open tap device failed: {}", kPrefix, tap.error().message());
    auto existing
        = std::find_if(m_config.nets.begin(), m_config.nets.end(), [&](const NetConfig& n) { return n.id == net.id; });
    if (existing != m_config.nets.end())
        *existing = net;
    else
        m_config.nets.push_back(net);
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_vsock(const VsockConfig& vsock)
{
    if (vsock.cid < 3)
        return make_error("Vsock config error: Cannot create vsock device: guest_cid {} is reserved (the guest's "
                          "CID must be 3 or more)",
            vsock.cid);
    if (vsock.socket.empty())
        return make_error("Vsock config error: Cannot create backend for vsock device: uds_path is empty");
    m_config.vsock = vsock;
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_balloon(const BalloonConfig& balloon)
{
    if (uint64_t(balloon.amount_mib) > (m_config.mem_bytes >> 20))
        return make_error("Balloon config error: Amount of pages requested is too large.");
    m_config.balloon = true;
    m_config.balloon_target_bytes = uint64_t(balloon.amount_mib) << 20;
    m_config.balloon_deflate_on_oom = balloon.deflate_on_oom;
    m_config.balloon_stats_interval_s = balloon.stats_polling_interval_s;
    m_boot_specific = true;
    return {};
}

std::optional<BalloonConfig> VmResources::balloon() const
{
    if (!m_config.balloon)
        return std::nullopt;
    return BalloonConfig { static_cast<uint32_t>(m_config.balloon_target_bytes >> 20), m_config.balloon_deflate_on_oom,
        m_config.balloon_stats_interval_s };
}

Result<void> VmResources::set_entropy(const std::optional<RateLimiterConfig>& limiter)
{
    m_config.rng = true;
    m_config.rng_rate_limiter = limiter;
    m_boot_specific = true;
    return {};
}

Result<void> VmResources::set_serial_out(const std::string& path)
{
    m_serial_out = path;
    return {};
}

Result<void> VmResources::set_mmds_config(const MmdsConfig& mmds)
{
    // "MMMDS" is Firecracker's own spelling of this prefix; clients matching on it see the same.
    constexpr const char* kPrefix = "MMMDS config error: ";
    in_addr addr {};
    if (::inet_pton(AF_INET, mmds.ipv4_address.c_str(), &addr) != 1)
        return make_error("An error occurred when deserializing the json body of a request: invalid IP address "
                          "syntax");
    uint32_t ip = ntohl(addr.s_addr);
    // Link-local, without the reserved first and last /24 (RFC 3927): 169.254.1.0 - 169.254.254.255.
    if ((ip >> 16) != 0xa9fe || ((ip >> 8) & 0xff) == 0 || ((ip >> 8) & 0xff) == 0xff)
        return make_error("{}The MMDS IPv4 address is not link local.", kPrefix);
    if (mmds.network_interfaces.empty())
        return make_error("{}The list of network interface IDs that allow forwarding MMDS requests is empty.", kPrefix);
    for (auto& id : mmds.network_interfaces) {
        bool found
            = std::any_of(m_config.nets.begin(), m_config.nets.end(), [&](const NetConfig& n) { return n.id == id; });
        if (!found)
            return make_error("{}The list of network interface IDs provided contains at least one ID that does not "
                              "correspond to any existing network interface.",
                kPrefix);
    }
    m_config.mmds = mmds;
    m_boot_specific = true;
    return {};
}

Result<VmConfig> VmResources::build() const
{
    if (!m_boot_source)
        return make_error("Start microvm error: Cannot start microvm without kernel configuration.");
    VmConfig config = m_config;
    config.track_dirty_pages = m_track_dirty_pages;
    for (auto& d : config.disks) {
        if (!d.root)
            continue;
        std::string root = d.partuuid ? fmt::format("root=PARTUUID={}", *d.partuuid) : "root=/dev/vda";
        config.cmdline += fmt::format("{}{} {}", config.cmdline.empty() ? "" : " ", root, d.read_only ? "ro" : "rw");
    }
    if (config.cmdline.size() + 1 > layout::kCmdlineMax)
        return make_error("Start microvm error: Invalid kernel command line: it is {} bytes long, the limit is {}",
            config.cmdline.size(), layout::kCmdlineMax - 1);
    return config;
}

} // namespace vessel
