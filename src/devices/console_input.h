// A device that takes the VMM's console input (stdin): the 16550 UART by default, or the
// virtio console with --console virtio. The event loop reads stdin only while wants_input() is
// true, at most input_space() bytes at a time, and resumes when the input-space notifier fires.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace vessel {

class ConsoleInput {
public:
    virtual ~ConsoleInput() = default;
    // Host input (any thread).
    virtual void enqueue_input(std::span<const uint8_t> bytes) = 0;
    virtual bool wants_input() const = 0;
    virtual size_t input_space() const = 0;
    // Called (any thread, no device lock held) when room appeared after wants_input() was false.
    virtual void set_input_space_notifier(std::function<void()> notifier) = 0;
};

} // namespace vessel
