// The host terminal: raw mode while the VM runs when stdin is a terminal, restored on every
// exit path (normal return, error, fatal signal). Ctrl-A x quits the VMM; Ctrl-A Ctrl-A sends a
// literal Ctrl-A; every other byte, Ctrl-C included, goes to the guest.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace vessel {

class Console {
public:
    Console();
    ~Console();
    Console(const Console&) = delete;
    Console& operator=(const Console&) = delete;

    bool is_terminal() const { return m_raw; }

    // Filters input bytes for the escape sequence. Returns the bytes for the guest; sets
    // `quit` when the user typed Ctrl-A x.
    std::vector<uint8_t> filter_input(std::span<const uint8_t> in, bool& quit);

    // Writes all of `data` to stdout (guest serial output); never throws, drops on EPIPE.
    static void write_output(std::span<const uint8_t> data);

    // Restores the terminal if it was put in raw mode (async-signal-safe).
    static void restore_terminal();

private:
    bool m_raw { false };
    bool m_escape { false };
};

} // namespace vessel
