// virtio-vsock (virtio v1.2, 5.10) with Firecracker's host side: no /dev/vhost-vsock, the host end
// is a Unix socket listening at PATH (see vsock_muxer.h for the protocol both ways).
//
// Queues rx (0), tx (1), event (2); config space: guest_cid (le64). All queue and socket work runs
// on one I/O thread per activation, waiting in epoll on the listening socket, the connection
// sockets and an eventfd that notify() kicks, so vCPU threads never block on host I/O. reset()
// and shutdown() stop and join that thread and close every connection (the host streams see EOF);
// when the driver activates the device again (a driver reload), the event queue carries
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET so that the guest drops whatever socket state it kept.
//
// VM pause stops the I/O thread after the poll() round it is in (what that round took from the
// queues is used and signalled) and keeps the muxer: connections, data read ahead, queue positions.
// Meanwhile host streams wait in their socket buffers and new ones in the listen backlog, as when
// the guest gives no credit or rx buffers. resume() starts a thread again.
//
// The listening socket lives as long as the device (the VM): created by create() (a stale socket
// file left by a killed VMM is replaced; anything else at PATH, or a path where no socket can be
// made, is an error naming PATH) and removed by shutdown(). Host streams that connect while the
// driver is not ready wait in the listen backlog.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "devices/virtio/vsock_muxer.h"

namespace vessel::virtio {

class VsockDevice final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;

    // Listens at `socket_path` (guest-initiated connections go to socket_path + "_<port>").
    static Result<std::shared_ptr<VsockDevice>> create(uint64_t guest_cid, std::string socket_path);
    ~VsockDevice() override;

    DeviceType type() const override { return DeviceType::Vsock; }
    std::string_view name() const override { return "vsock"; }
    uint64_t features() const override { return vsock::kFStream; }
    std::vector<uint16_t> queue_max_sizes() const override { return { kQueueSize, kQueueSize, kQueueSize }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void shutdown() override;
    void pause() override;
    void resume() override;
    // Snapshots, by Firecracker's rule: connections (host sockets, data read ahead or not yet
    // written) are not saved. The state is the guest CID (a restore onto a device with another
    // CID is refused); the restored device sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event
    // queue when it resumes, so the guest drops its connections and can connect again.
    nlohmann::json save_state() const override;
    Result<void> restore_state(const nlohmann::json& state) override;
    void report_metrics(MetricsReport& out) const override;

    uint64_t guest_cid() const { return m_guest_cid; }
    const std::string& socket_path() const { return m_path; }
    // Counters over the device's life (all activations).
    const VsockStats& stats() const { return m_stats; }

private:
    // Wakes the I/O thread (notify() without counting a queue event).
    void wake();
    VsockDevice(uint64_t guest_cid, std::string path);
    Result<void> listen();
    void run();
    Result<void> start_thread();
    // Stops the I/O thread; the muxer stays.
    void join_thread();
    // join_thread() and the muxer closed (every connection).
    void stop_thread();

    uint64_t m_guest_cid;
    std::string m_path;
    int m_listener { -1 };
    dev_t m_socket_dev { 0 };
    ino_t m_socket_ino { 0 };
    int m_wake { -1 };

    std::unique_ptr<VsockMuxer> m_muxer;
    VirtioInterrupt* m_interrupt { nullptr }; // of the activation (a failed restart is reported there)
    std::thread m_thread;
    std::atomic<bool> m_stop { false };
    VsockStats m_stats;
    unsigned m_activations { 0 };
};

// Connects to the Unix socket `path` (non-blocking): the host side of a guest-initiated connection.
Result<int> vsock_connect_unix(const std::string& path);

} // namespace vessel::virtio
