// vessel console ID: the VM's serial console in this terminal, through the API socket (an HTTP
// upgrade to "vessel-console"). Ctrl-A d detaches (the VM runs on), Ctrl-A Ctrl-A sends Ctrl-A.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "cli/api_client.h"
#include "cli/verbs.h"
#include "vmm/console.h"

namespace vessel {

namespace {

constexpr uint8_t kEscape = 0x01; // Ctrl-A

bool write_all(int fd, const char* data, size_t len)
{
    while (len > 0) {
        ssize_t n = ::write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

} // namespace

int command_console(const CliOptions& o)
{
    auto client = ApiClient::connect(o.target);
    if (!client.ok()) {
        std::fprintf(stderr, "vessel: error: %s\n", client.error().message().c_str());
        return 1;
    }
    std::string early;
    auto fd = client->upgrade(fmt::format("/console?history={}", o.history), "vessel-console", early);
    if (!fd.ok()) {
        std::fprintf(stderr, "vessel: error: %s\n", fd.error().message().c_str());
        return 1;
    }
    int sock = fd.value();
    Console terminal; // raw mode while attached (restored on every exit path)
    std::fprintf(stderr, "Connected to %s (detach: Ctrl-A d)\r\n", o.target.c_str());
    if (!early.empty())
        write_all(STDOUT_FILENO, early.data(), early.size());
    bool escape = false;
    bool stdin_open = true;
    for (;;) {
        pollfd fds[2] = { { sock, POLLIN, 0 }, { STDIN_FILENO, static_cast<short>(stdin_open ? POLLIN : 0), 0 } };
        int r = ::poll(fds, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t n = ::read(sock, buf, sizeof(buf));
            if (n <= 0) {
                std::fprintf(stderr, "\r\n[the VM has exited]\r\n");
                break;
            }
            write_all(STDOUT_FILENO, buf, static_cast<size_t>(n));
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            uint8_t in[256];
            ssize_t n = ::read(STDIN_FILENO, in, sizeof(in));
            if (n <= 0) {
                stdin_open = false; // end of input: keep showing output until the VM or a signal ends it
                continue;
            }
            std::string out;
            bool detach = false;
            for (ssize_t i = 0; i < n; ++i) {
                uint8_t b = in[i];
                if (escape) {
                    escape = false;
                    if (b == 'd' || b == 'D') {
                        detach = true;
                        break;
                    }
                    if (b != kEscape)
                        out.push_back(static_cast<char>(kEscape));
                    out.push_back(static_cast<char>(b));
                    continue;
                }
                if (b == kEscape && terminal.is_terminal()) {
                    escape = true;
                    continue;
                }
                out.push_back(static_cast<char>(b));
            }
            if (!out.empty() && ::send(sock, out.data(), out.size(), MSG_NOSIGNAL) < 0) {
                std::fprintf(stderr, "\r\n[the VM has exited]\r\n");
                break;
            }
            if (detach) {
                std::fprintf(stderr, "\r\n[detached from %s]\r\n", o.target.c_str());
                break;
            }
        }
    }
    ::close(sock);
    return 0;
}

} // namespace vessel
