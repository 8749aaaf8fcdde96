#include "devices/virtio/vsock.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/state_json.h"

namespace vessel::virtio {

namespace {

// Longest path a sockaddr_un holds (with its terminating NUL).
constexpr size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

Result<sockaddr_un> unix_address(const std::string& path)
{
    if (path.empty() || path.size() > kMaxSocketPath)
        return make_error("'{}': a Unix socket path must be 1 to {} bytes long", path, kMaxSocketPath);
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    return addr;
}

} // namespace

Result<int> vsock_connect_unix(const std::string& path)
{
    sockaddr_un addr = TRY(unix_address(path));
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return Error::from_errno("socket");
    // A Unix stream connect completes at once (or fails: nobody listens, backlog full); it never
    // leaves the I/O thread waiting.
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0) {
        int err = errno;
        ::close(fd);
        return Error::from_errno(fmt::format("connect to '{}'", path), err);
    }
    return fd;
}

Result<std::shared_ptr<VsockDevice>> VsockDevice::create(uint64_t guest_cid, std::string socket_path)
{
    std::shared_ptr<VsockDevice> device(new VsockDevice(guest_cid, std::move(socket_path)));
    TRY_CTX(device->listen(), fmt::format("vsock socket '{}'", device->m_path));
    device->m_wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (device->m_wake < 0)
        return Error::from_errno("vsock: eventfd");
    return device;
}

VsockDevice::VsockDevice(uint64_t guest_cid, std::string path)
    : m_guest_cid(guest_cid)
    , m_path(std::move(path))
{
}

VsockDevice::~VsockDevice()
{
    shutdown();
}

Result<void> VsockDevice::listen()
{
    sockaddr_un addr = TRY(unix_address(m_path));
    // A socket file at PATH is either a stale one (a VMM that was killed could not remove it) or
    // another VMM's live one: only the stale kind is replaced. Anything else there is the user's.
    struct stat st;
    if (::lstat(m_path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return make_error("exists and is not a socket (not replacing it)");
        auto probe = vsock_connect_unix(m_path);
        if (probe.ok()) {
            ::close(probe.value());
            return make_error("another process is listening there");
        }
        if (::unlink(m_path.c_str()) < 0 && errno != ENOENT)
            return Error::from_errno("cannot remove the stale socket");
    }
    m_listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (m_listener < 0)
        return Error::from_errno("socket");
    if (::bind(m_listener, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0)
        return Error::from_errno("cannot create the socket");
    // Remembered so that shutdown() removes our socket file, never one that replaced it.
    if (::stat(m_path.c_str(), &st) == 0) {
        m_socket_dev = st.st_dev;
        m_socket_ino = st.st_ino;
    }
    if (::listen(m_listener, SOMAXCONN) < 0)
        return Error::from_errno("listen");
    return {};
}

void VsockDevice::read_config(uint64_t offset, std::span<uint8_t> data)
{
    // struct virtio_vsock_config { le64 guest_cid; } (5.10.4); the driver reads it as two 32-bit halves.
    uint8_t config[8];
    vsock::store_le<uint64_t>(config, m_guest_cid);
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
}

Result<void> VsockDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.size() < 3 || !ctx.queues[vsock::kRxQueue].active() || !ctx.queues[vsock::kTxQueue].active())
        return make_error("virtio-vsock: the rx and tx queues are not set up");
    Queue* event = ctx.queues[vsock::kEventQueue].active() ? &ctx.queues[vsock::kEventQueue] : nullptr;
    stop_thread(); // the transport resets before activating again; never two I/O threads
    std::string path = m_path;
    auto muxer = std::make_unique<VsockMuxer>(
        m_guest_cid, [path](uint32_t port) { return vsock_connect_unix(fmt::format("{}_{}", path, port)); }, &m_stats);
    TRY(muxer->init());
    muxer->attach(ctx.interrupt, &ctx.queues[vsock::kRxQueue], &ctx.queues[vsock::kTxQueue], event);
    TRY(muxer->watch_listener(m_listener));
    TRY(muxer->watch_wake(m_wake));
    // A driver that activates the device again (reloaded, or after its own reset) may still hold
    // sockets of the previous activation, whose host ends are gone.
    if (m_activations++ > 0)
        muxer->queue_transport_reset_event();
    m_muxer = std::move(muxer);
    m_interrupt = ctx.interrupt;
    if (ctx.paused)
        return {}; // a snapshot restore: resume() starts the thread
    if (auto started = start_thread(); !started.ok()) {
        m_muxer.reset();
        return started;
    }
    return {};
}

Result<void> VsockDevice::start_thread()
{
    m_stop.store(false);
    try {
        m_thread = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        return make_error("virtio-vsock: cannot start the I/O thread: {}", e.what());
    }
    return {};
}

void VsockDevice::run()
{
    // Host sockets and queues are only touched here. Packets queued before the driver's first
    // notification (e.g. host streams from the backlog) go out as soon as rx buffers appear.
    while (!m_stop.load(std::memory_order_acquire)) {
        m_muxer->poll(m_muxer->busy() ? 0 : 1000);
    }
}

void VsockDevice::notify(uint16_t queue)
{
    if (queue == vsock::kRxQueue)
        ++m_stats.rx_queue_events;
    else if (queue == vsock::kTxQueue)
        ++m_stats.tx_queue_events;
    wake();
}

void VsockDevice::wake()
{
    // Any queue: the I/O thread looks at all of them. A non-blocking eventfd write never waits.
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(m_wake, &one, sizeof(one));
}

void VsockDevice::join_thread()
{
    if (!m_thread.joinable())
        return;
    // The wake ends the thread's wait at once; a poll() round it is in is bounded (kBatch packets
    // per queue, non-blocking sockets).
    m_stop.store(true, std::memory_order_release);
    wake();
    m_thread.join();
}

void VsockDevice::stop_thread()
{
    join_thread();
    m_muxer.reset(); // closes every connection: the host streams see EOF
    m_interrupt = nullptr;
}

void VsockDevice::pause()
{
    join_thread();
}

void VsockDevice::resume()
{
    if (!m_muxer || m_thread.joinable() || m_muxer->broken())
        return;
    // The wake makes the first round run at once: the queues may hold what the driver added
    // (and notified) while paused, and host sockets what arrived meanwhile.
    wake();
    if (auto started = start_thread(); !started.ok()) {
        log_error("{}", started.error().message());
        m_interrupt->device_error("virtio-vsock: cannot restart the I/O thread after a pause");
    }
}

nlohmann::json VsockDevice::save_state() const
{
    return { { "guest_cid", m_guest_cid } };
}

Result<void> VsockDevice::restore_state(const nlohmann::json& state)
{
    uint64_t cid = TRY(state::get_uint(state, "guest_cid", "virtio-vsock"));
    if (cid != m_guest_cid)
        return make_error("virtio-vsock: the state is for guest CID {}, this device has CID {}", cid, m_guest_cid);
    // The guest's sockets refer to connections whose host ends were not saved: the restored
    // device's first round (at resume) tells it to drop them all. A driver that activates the
    // device only later gets the same event then.
    if (m_muxer)
        m_muxer->queue_transport_reset_event();
    m_activations = std::max(m_activations, 1u);
    return {};
}

void VsockDevice::reset()
{
    stop_thread();
}

void VsockDevice::shutdown()
{
    stop_thread();
    if (m_listener >= 0) {
        ::close(m_listener);
        m_listener = -1;
        struct stat st;
        if (::lstat(m_path.c_str(), &st) == 0 && st.st_dev == m_socket_dev && st.st_ino == m_socket_ino)
            ::unlink(m_path.c_str());
    }
    if (m_wake >= 0) {
        ::close(m_wake);
        m_wake = -1;
    }
}

void VsockDevice::report_metrics(MetricsReport& out) const
{
    // Firecracker's byte counts are payload: rx = host to guest, tx = guest to host.
    out.counter("rx_bytes_count", m_stats.bytes_to_guest.load(std::memory_order_relaxed));
    out.counter("tx_bytes_count", m_stats.bytes_to_host.load(std::memory_order_relaxed));
    out.counter("rx_packets_count", m_stats.rx_packets.load(std::memory_order_relaxed));
    out.counter("tx_packets_count", m_stats.tx_packets.load(std::memory_order_relaxed));
    out.counter("conns_added", m_stats.conns_added.load(std::memory_order_relaxed));
    out.counter("conns_removed", m_stats.conns_removed.load(std::memory_order_relaxed));
    out.counter("conns_killed", m_stats.conns_killed.load(std::memory_order_relaxed));
    out.counter("rx_queue_event_count", m_stats.rx_queue_events.load(std::memory_order_relaxed));
    out.counter("tx_queue_event_count", m_stats.tx_queue_events.load(std::memory_order_relaxed));
}

} // namespace vessel::virtio
