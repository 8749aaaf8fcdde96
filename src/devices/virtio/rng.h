// virtio-rng (virtio v1.2, 5.4): one request queue; every device-writable buffer the driver
// offers is filled from the host's getrandom() on the notifying vCPU's thread (it never blocks
// once the host's pool is initialised, and a request is at most a page).
#pragma once

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

class RngDevice final : public VirtioDevice {
public:
    // Largest buffer filled per request; the rest of a longer buffer stays unwritten.
    static constexpr uint32_t kMaxRequestBytes = 64 * 1024;

    DeviceType type() const override { return DeviceType::Rng; }
    std::string_view name() const override { return "rng"; }
    uint64_t features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return { 256 }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;

    uint64_t bytes_served() const { return m_bytes; }

private:
    ActivateContext m_ctx;
    Chain m_chain;
    uint64_t m_bytes { 0 };
};

} // namespace vessel::virtio
