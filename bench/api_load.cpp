// API socket load generator for bench/api.sh: N client threads, each with its own keep-alive
// connection to a Unix socket, send M requests one after another (a request, then its whole
// answer) and record each round trip; prints the latency percentiles. Written in C++ so that the
// client's own overhead stays far below what is measured (a Python client adds ~50 us).
//   api_load SOCKET [--clients N] [--requests M] [--path /] [--method GET] [--body JSON]
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

uint64_t now_ns()
{
    timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

int connect_unix(const char* path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        std::perror("connect");
        std::exit(1);
    }
    return fd;
}

// Reads one answer (headers and a Content-Length body, or none for 204) and returns its status.
int read_reply(int fd, std::string& buf)
{
    for (;;) {
        size_t end = buf.find("\r\n\r\n");
        if (end != std::string::npos) {
            int status = std::atoi(buf.c_str() + 9);
            size_t length = 0;
            size_t cl = buf.find("Content-Length: ");
            if (cl != std::string::npos && cl < end)
                length = std::strtoul(buf.c_str() + cl + 16, nullptr, 10);
            if (buf.size() >= end + 4 + length) {
                buf.erase(0, end + 4 + length);
                return status;
            }
        }
        char chunk[8192];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n <= 0) {
            std::fprintf(stderr, "api_load: the server closed the connection\n");
            std::exit(1);
        }
        buf.append(chunk, static_cast<size_t>(n));
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(
            stderr, "usage: api_load SOCKET [--clients N] [--requests M] [--path P] [--method M] [--body B]\n");
        return 2;
    }
    const char* socket_path = argv[1];
    int clients = 50, requests = 20;
    std::string path = "/", method = "GET", body;
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--clients")
            clients = std::atoi(argv[i + 1]);
        else if (a == "--requests")
            requests = std::atoi(argv[i + 1]);
        else if (a == "--path")
            path = argv[i + 1];
        else if (a == "--method")
            method = argv[i + 1];
        else if (a == "--body")
            body = argv[i + 1];
    }
    std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n";
    if (!body.empty())
        request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    request += "\r\n" + body;

    std::vector<std::vector<uint64_t>> latencies(static_cast<size_t>(clients));
    std::atomic<int> errors { 0 };
    std::atomic<int> ready { 0 };
    std::atomic<bool> go { false };
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            int fd = connect_unix(socket_path);
            std::string buf;
            ++ready;
            while (!go.load())
                std::this_thread::yield();
            for (int r = 0; r < requests; ++r) {
                uint64_t t0 = now_ns();
                if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()))
                    std::exit(1);
                int status = read_reply(fd, buf);
                latencies[static_cast<size_t>(c)].push_back(now_ns() - t0);
                if (status >= 400)
                    ++errors;
            }
            close(fd);
        });
    }
    while (ready.load() < clients)
        std::this_thread::yield();
    uint64_t t0 = now_ns();
    go = true;
    for (auto& t : threads)
        t.join();
    double wall_s = static_cast<double>(now_ns() - t0) / 1e9;
    std::vector<uint64_t> all;
    for (auto& l : latencies)
        all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    auto pct = [&](double p) {
        size_t i = static_cast<size_t>(p * static_cast<double>(all.size() - 1) + 0.5);
        return static_cast<double>(all[i]) / 1000.0;
    };
    std::printf("requests=%zu clients=%d errors=%d wall_s=%.3f rate=%.0f/s p50_us=%.1f p90_us=%.1f p99_us=%.1f "
                "max_us=%.1f\n",
        all.size(), clients, errors.load(), wall_s, static_cast<double>(all.size()) / wall_s, pct(0.5), pct(0.9),
        pct(0.99), pct(1.0));
    return errors.load() ? 1 : 0;
}
