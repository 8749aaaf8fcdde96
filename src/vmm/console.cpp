#include "vmm/console.h"

#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

namespace vessel {

namespace {

constexpr uint8_t kEscape = 0x01; // Ctrl-A

struct termios g_saved_termios;
std::atomic<bool> g_termios_saved { false };

void fatal_signal_handler(int sig)
{
    Console::restore_terminal();
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

void install_restore_handlers()
{
    static bool installed = false;
    if (installed)
        return;
    installed = true;
    std::atexit([] { Console::restore_terminal(); });
    for (int sig : { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT }) {
        struct sigaction sa { };
        sa.sa_handler = fatal_signal_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        ::sigaction(sig, &sa, nullptr);
    }
}

} // namespace

void Console::restore_terminal()
{
    if (g_termios_saved.exchange(false))
        ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
}

Console::Console()
{
    if (!::isatty(STDIN_FILENO))
        return;
    struct termios t;
    if (::tcgetattr(STDIN_FILENO, &t) != 0)
        return;
    g_saved_termios = t;
    g_termios_saved = true;
    install_restore_handlers();
    ::cfmakeraw(&t);
    // Keep output post-processing off too: the guest sends its own CR LF.
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (::tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
        m_raw = true;
    else
        g_termios_saved = false;
}

Console::~Console()
{
    restore_terminal();
}

std::vector<uint8_t> Console::filter_input(std::span<const uint8_t> in, bool& quit)
{
    std::vector<uint8_t> out;
    out.reserve(in.size());
    for (uint8_t b : in) {
        if (m_escape) {
            m_escape = false;
            if (b == 'x' || b == 'X') {
                quit = true;
                return out;
            }
            if (b == kEscape) {
                out.push_back(kEscape);
                continue;
            }
            // Unknown escape: pass both bytes through.
            out.push_back(kEscape);
            out.push_back(b);
            continue;
        }
        if (b == kEscape && m_raw) {
            m_escape = true;
            continue;
        }
        out.push_back(b);
    }
    return out;
}

void Console::write_output(std::span<const uint8_t> data)
{
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(STDOUT_FILENO, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; // EPIPE or a closed stdout: the guest's output has nowhere to go
        }
        done += static_cast<size_t>(n);
    }
}

} // namespace vessel
