#include "devices/virtio/rng.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace vessel::virtio {

void RngDevice::read_config(uint64_t, std::span<uint8_t> data) { std::memset(data.data(), 0, data.size()); }

Result<void> RngDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.empty() || !ctx.queues[0].active())
        return make_error("virtio-rng: the request queue is not set up");
    m_ctx = ctx;
    return {};
}

void RngDevice::reset() { m_ctx = {}; }

void RngDevice::notify(uint16_t queue)
{
    if (queue != 0 || !m_ctx.interrupt)
        return;
    Queue& q = m_ctx.queues[0];
    bool used = false;
    for (;;) {
        auto popped = q.pop(m_chain);
        if (!popped.ok()) {
            m_ctx.interrupt->device_error(popped.error().message());
            return;
        }
        if (!popped.value())
            break;
        ChainWriter writer(m_chain);
        size_t want = std::min<uint64_t>(writer.remaining(), kMaxRequestBytes);
        size_t filled = 0;
        writer.for_each(want, [&](uint8_t* p, size_t n) {
            size_t got = 0;
            while (got < n) {
                ssize_t r = ::getrandom(p + got, n - got, 0);
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    break;
                }
                got += static_cast<size_t>(r);
            }
            filled += got;
        });
        q.add_used(m_chain, static_cast<uint32_t>(filled));
        m_bytes += filled;
        used = true;
    }
    if (used && q.needs_interrupt())
        m_ctx.interrupt->signal_queue(0);
}

} // namespace vessel::virtio
