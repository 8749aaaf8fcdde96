// vsock-tool: the Linux test guest's AF_VSOCK client and server (busybox has no vsock support).
// Built static by scripts/build-initramfs.sh and installed as /bin/vsock-tool.
//
//   vsock-tool cid                    print this guest's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID)
//   vsock-tool listen PORT            accept one stream connection on PORT, then copy
//   vsock-tool connect CID PORT       connect to CID:PORT, then copy
//       copy: socket -> stdout and stdin -> socket at the same time; stdin's EOF half-closes the
//       socket (shutdown SHUT_WR); ends when the peer has closed its side too.
//   vsock-tool echo PORT              accept one connection on PORT and send back all it receives
//                                     until the peer half-closes, then close.
// Ends with a line on stderr: "vsock-tool: in=<bytes received> out=<bytes sent>"; exit status 0,
// or 1 with "vsock-tool: <what>: <strerror>" (e.g. "connect: Connection reset by peer" when the
// host answers with RST).
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char* what)
{
    fprintf(stderr, "vsock-tool: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long parse_number(const char* text, const char* what)
{
    char* end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 0);
    if (errno || *text == 0 || *end != 0 || v > 0xffffffffUL) {
        fprintf(stderr, "vsock-tool: bad %s '%s'\n", what, text);
        exit(2);
    }
    return v;
}

static int write_all(int fd, const char* p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

// Copies `in` to `out` until EOF; returns the byte count, or -1 on an error.
static long long pump(int in, int out)
{
    static char buf[64 * 1024];
    long long total = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return total;
        if (write_all(out, buf, (size_t)n) < 0)
            return -1;
        total += n;
    }
}

static int accept_one(unsigned port)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
    if (bind(s, (struct sockaddr*)&addr, sizeof(addr)) < 0)
        die("bind");
    if (listen(s, 1) < 0)
        die("listen");
    int c = accept(s, NULL, NULL);
    if (c < 0)
        die("accept");
    close(s);
    return c;
}

static int connect_to(unsigned cid, unsigned port)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    // The default connect timeout is 2 s; a guest on a software CPU on a busy host can need more.
    struct timeval tv = { .tv_sec = 60 };
    setsockopt(s, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv));
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
    if (connect(s, (struct sockaddr*)&addr, sizeof(addr)) < 0)
        die("connect");
    return s;
}

// Both directions at once: a child copies socket -> stdout while this process copies stdin ->
// socket (blocking I/O in two processes is simpler than a poll loop and just as correct here).
static int copy_both(int s)
{
    int report[2];
    if (pipe(report) < 0)
        die("pipe");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(report[0]);
        long long in = pump(s, 1);
        if (in < 0)
            fprintf(stderr, "vsock-tool: receiving: %s\n", strerror(errno));
        write_all(report[1], (const char*)&in, sizeof(in));
        _exit(in < 0 ? 1 : 0);
    }
    close(report[1]);
    long long out = pump(0, s);
    if (out < 0)
        fprintf(stderr, "vsock-tool: sending: %s\n", strerror(errno));
    shutdown(s, SHUT_WR);
    long long in = -1;
    if (read(report[0], &in, sizeof(in)) != sizeof(in))
        in = -1;
    int status = 0;
    waitpid(child, &status, 0);
    close(s);
    fprintf(stderr, "vsock-tool: in=%lld out=%lld\n", in, out);
    return out < 0 || in < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int main(int argc, char** argv)
{
    if (argc == 2 && strcmp(argv[1], "cid") == 0) {
        int fd = open("/dev/vsock", O_RDONLY);
        unsigned cid = 0;
        if (fd < 0)
            die("/dev/vsock");
        if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
            die("IOCTL_VM_SOCKETS_GET_LOCAL_CID");
        printf("%u\n", cid);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "listen") == 0)
        return copy_both(accept_one((unsigned)parse_number(argv[2], "port")));
    if (argc == 4 && strcmp(argv[1], "connect") == 0)
        return copy_both(connect_to((unsigned)parse_number(argv[2], "cid"), (unsigned)parse_number(argv[3], "port")));
    if (argc == 3 && strcmp(argv[1], "echo") == 0) {
        int s = accept_one((unsigned)parse_number(argv[2], "port"));
        long long n = pump(s, s);
        if (n < 0)
            die("echo");
        close(s);
        fprintf(stderr, "vsock-tool: in=%lld out=%lld\n", n, n);
        return 0;
    }
    fprintf(stderr, "usage: vsock-tool cid | listen PORT | connect CID PORT | echo PORT\n");
    return 2;
}
