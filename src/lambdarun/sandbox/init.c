/* lambdarun's init: PID 1 of an environment's sandbox (see namespace.py), and the helper that makes its user
 * namespace.
 *
 *   init userns-exec NSFD UIDMAP GIDMAP allow|deny -- COMMAND...
 *       Run by lambdarun on the host. Makes a user namespace with these mappings ("inside outside count" lines,
 *       separated by commas) and setgroups allowed or not, where no further user namespace can be made, places a
 *       descriptor of it at NSFD and execs COMMAND (bwrap --userns NSFD).
 *
 *   init die-with-parent -- COMMAND...
 *       Run by lambdarun on the host for a helper (pasta) that must not outlive it: execs COMMAND with
 *       PR_SET_PDEATHSIG SIGKILL.
 *
 *   init serve CONTROLFD [--listen PORT] [--cgroup FD]... [--user UID:GID] [--nofile N] [--nproc N]
 *       PID 1 inside the sandbox. With --user (when started as root of the namespace, with CAP_SETUID, SETGID and
 *       SETPCAP only), it first becomes UID:GID with no capabilities at all, bounding set included. Listens on 127.0.0.1:PORT of the sandbox's network namespace and hands that
 *       socket out, then serves lambdarun's requests on the CONTROLFD socket (SOCK_SEQPACKET): start a process,
 *       signal one process group or every process, kill everything and say when none is left, create a socket
 *       in the namespace. It reaps every process (orphans are re-parented to it) and reports the exit of the
 *       ones it started. When lambdarun goes away (EOF on CONTROLFD) it exits, and the kernel kills every process
 *       of the PID namespace with it.
 *
 * Messages both ways start with struct header; the rest of a SPAWN request is "cwd\0argv...\0env...\0", its
 * descriptors (SCM_RIGHTS) are the stdout/stderr pipe then extra descriptors placed at 3, 4, ...
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { REQ_SPAWN = 1, REQ_SIGNAL = 2, REQ_SIGNAL_ALL = 3, REQ_KILL_ALL = 4, REQ_SOCKET = 5, REQ_PING = 6 };
enum { EV_READY = 101, EV_SPAWNED = 102, EV_EXITED = 103, EV_EMPTY = 104, EV_SOCKET = 105, EV_PONG = 106 };

struct header {
    uint32_t type;
    uint32_t handle;
    int32_t a;
    int32_t b;
    int64_t c;
};

#define MAX_MESSAGE (256 * 1024)
#define MAX_FDS 8
#define MAX_CHILDREN 256

struct child {
    pid_t pid;
    uint32_t handle;
};

static struct child children[MAX_CHILDREN];
static int control = -1;
#define MAX_CGROUPS 4 /* one cgroup.procs per v1 hierarchy (memory, pids, freezer), or v2's one */
static int cgroup_procs[MAX_CGROUPS];
static int n_cgroup_procs;
static rlim_t nofile = 0, nproc = 0; /* 0: inherited */
static uint32_t empty_waiters[MAX_CHILDREN];
static int n_empty_waiters;
static char message[MAX_MESSAGE + 1];

static void die(const char *what) {
    fprintf(stderr, "lambdarun init: %s: %s\n", what, strerror(errno));
    _exit(125);
}

/* --- userns-exec: runs on the host, before bwrap --- */

static void write_file(pid_t pid, const char *name, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        die(path);
    close(fd);
}

static int userns_exec(int argc, char **argv) {
    if (argc < 8 || strcmp(argv[6], "--") != 0) {
        fprintf(stderr, "usage: init userns-exec NSFD UIDMAP GIDMAP allow|deny -- COMMAND...\n");
        return 2;
    }
    int nsfd = atoi(argv[2]);
    char uid_map[256], gid_map[256];
    snprintf(uid_map, sizeof uid_map, "%s\n", argv[3]);
    snprintf(gid_map, sizeof gid_map, "%s\n", argv[4]);
    for (char *c = uid_map; *c; c++)
        if (*c == ',')
            *c = '\n';
    for (char *c = gid_map; *c; c++)
        if (*c == ',')
            *c = '\n';
    int go[2], done[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        /* The child creates the namespace; the parent, still outside it, writes its mappings. Then the child,
         * with every capability inside it, allows no user namespace below it: `unshare -r` fails inside. */
        char status = 0;
        if (unshare(CLONE_NEWUSER) < 0)
            status = (char)errno;
        if (write(done[1], &status, 1) != 1 || status != 0)
            _exit(1);
        if (read(go[0], &status, 1) != 1)
            _exit(1);
        int fd = open("/proc/sys/user/max_user_namespaces", O_WRONLY | O_CLOEXEC);
        status = 0;
        if (fd < 0 || write(fd, "0", 1) != 1)
            status = (char)errno;
        if (write(done[1], &status, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char status;
    if (read(done[0], &status, 1) != 1 || status != 0) {
        errno = status;
        die("unshare(CLONE_NEWUSER)");
    }
    write_file(pid, "setgroups", argv[5]);
    write_file(pid, "uid_map", uid_map);
    write_file(pid, "gid_map", gid_map);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die(path);
    if (write(go[1], "x", 1) != 1 || read(done[0], &status, 1) != 1)
        die("user namespace helper");
    if (status != 0) {
        errno = status;
        die("max_user_namespaces");
    }
    waitpid(pid, NULL, 0);
    if (fd != nsfd) {
        if (dup2(fd, nsfd) < 0)
            die("dup2");
        close(fd);
    }
    execvp(argv[7], argv + 7);
    die(argv[7]);
    return 125;
}

/* --- die-with-parent --- */

static int die_with_parent(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: init die-with-parent -- COMMAND...\n");
        return 2;
    }
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        die("prctl");
    if (getppid() != parent) /* the parent died before the line above */
        return 1;
    execvp(argv[3], argv + 3);
    die(argv[3]);
    return 125;
}

/* --- serve: PID 1 inside the sandbox --- */

static void send_event(uint32_t type, uint32_t handle, int32_t a, int32_t b, int64_t c, int fd) {
    struct header h = {type, handle, a, b, c};
    struct iovec iov = {&h, sizeof h};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    while (sendmsg(control, &msg, MSG_NOSIGNAL) < 0) {
        if (errno == EINTR)
            continue;
        _exit(errno == EPIPE || errno == ECONNRESET ? 0 : 125); /* lambdarun is gone: so are we */
    }
}

static int listen_on(int port, int *err) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 128) < 0) {
        *err = errno;
        if (s >= 0)
            close(s);
        return -1;
    }
    *err = 0;
    return s;
}

static struct child *find_child(pid_t pid) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid == pid && pid > 0)
            return &children[i];
    return NULL;
}

static struct child *find_handle(uint32_t handle) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid > 0 && children[i].handle == handle)
            return &children[i];
    return NULL;
}

/* execve with the PATH of the child's own environment, as subprocess does; returns the errno. */
static int exec_path(char **argv, char **envp) {
    if (strchr(argv[0], '/') != NULL) {
        execve(argv[0], argv, envp);
        return errno;
    }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    int result = ENOENT;
    char candidate[4096];
    while (*path != '\0') {
        const char *end = strchrnul(path, ':');
        int n = snprintf(candidate, sizeof candidate, "%.*s/%s", (int)(end - path), path, argv[0]);
        if (n > 0 && (size_t)n < sizeof candidate) {
            execve(candidate, argv, envp);
            if (errno == EACCES)
                result = EACCES;
            else if (errno != ENOENT && errno != ENOTDIR)
                return errno;
        }
        path = *end == ':' ? end + 1 : end;
    }
    return result;
}

static void child_fail(int report, int err) {
    (void)!write(report, &err, sizeof err);
    _exit(127);
}

/* In the child between fork and exec: its own session, the environment's cgroup, its descriptors, its cwd. */
static void become(int report, const char *cwd, char **argv, char **envp, int *fds, int nfds) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    for (int i = 0; i < n_cgroup_procs; i++)
        if (write(cgroup_procs[i], "0", 1) != 1)
            child_fail(report, errno);
    /* Lambda's limits per process: open files always; processes and threads when no pids cgroup counts them (set
     * here, in the sandbox's user namespace, RLIMIT_NPROC counts only the sandbox's tasks). */
    struct rlimit limit;
    if (nofile > 0) {
        limit.rlim_cur = limit.rlim_max = nofile;
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0)
            child_fail(report, errno);
    }
    if (nproc > 0) {
        limit.rlim_cur = limit.rlim_max = nproc;
        if (setrlimit(RLIMIT_NPROC, &limit) < 0)
            child_fail(report, errno);
    }
    int moved[MAX_FDS];
    for (int i = 0; i < nfds; i++)
        if ((moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + MAX_FDS)) < 0)
            child_fail(report, errno);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(moved[0], 1) < 0 || dup2(moved[0], 2) < 0)
        child_fail(report, errno);
    for (int i = 1; i < nfds; i++)
        if (dup2(moved[i], 2 + i) < 0)
            child_fail(report, errno);
    /* Nothing else of init's reaches the process: not the control socket, not the cgroup. */
    if (syscall(SYS_close_range, 2 + nfds, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0) {
        for (int fd = 2 + nfds; fd < 1024; fd++)
            if (fd != report)
                close(fd);
    }
    if (chdir(cwd) < 0)
        child_fail(report, errno);
    child_fail(report, exec_path(argv, envp));
}

static void spawn(struct header *h, char *body, size_t len, int *fds, int nfds) {
    int argc = h->a, envc = h->b;
    struct child *slot = NULL;
    for (int i = 0; slot == NULL && i < MAX_CHILDREN; i++)
        if (children[i].pid == 0)
            slot = &children[i];
    char **vec = NULL;
    int err = 0;
    if (nfds < 1 || argc < 1 || envc < 0 || argc > 65536 || envc > 65536)
        err = EINVAL;
    else if (slot == NULL)
        err = EAGAIN;
    else if ((vec = calloc((size_t)argc + (size_t)envc + 3, sizeof(char *))) == NULL)
        err = ENOMEM;
    /* body: cwd, then argc strings, then envc strings, each NUL-terminated */
    char *cwd = body, *p = body, *end = body + len;
    for (int i = 0; err == 0 && i < 1 + argc + envc; i++) {
        char *nul = memchr(p, '\0', (size_t)(end - p));
        if (nul == NULL) {
            err = EINVAL;
            break;
        }
        if (i > 0)
            vec[i < 1 + argc ? i - 1 : i] = p; /* argv at vec[0..argc), NULL, env at vec[argc+1..] */
        p = nul + 1;
    }
    pid_t pid = -1;
    int report[2] = {-1, -1};
    if (err == 0 && pipe2(report, O_CLOEXEC) < 0)
        err = errno;
    if (err == 0) {
        vec[argc] = NULL;
        vec[argc + 1 + envc] = NULL;
        pid = fork();
        if (pid < 0)
            err = errno;
        else if (pid == 0)
            become(report[1], cwd, vec, vec + argc + 1, fds, nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (report[1] >= 0)
        close(report[1]);
    if (pid > 0) {
        int child_err;
        ssize_t n;
        while ((n = read(report[0], &child_err, sizeof child_err)) < 0 && errno == EINTR)
            ;
        if (n == sizeof child_err) { /* it never ran: reap it here, no exit to report */
            err = child_err;
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    if (report[0] >= 0)
        close(report[0]);
    free(vec);
    if (err != 0) {
        send_event(EV_SPAWNED, h->handle, -err, 0, 0, -1);
        return;
    }
    slot->pid = pid;
    slot->handle = h->handle;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    send_event(EV_SPAWNED, h->handle, pid, 0, 0, pidfd);
    if (pidfd >= 0)
        close(pidfd);
}

static void reap(void) {
    for (;;) {
        int status;
        struct rusage usage;
        pid_t pid = wait4(-1, &status, WNOHANG, &usage);
        if (pid > 0) {
            struct child *c = find_child(pid);
            if (c != NULL) {
                send_event(EV_EXITED, c->handle, status, 0, usage.ru_maxrss, -1);
                c->pid = 0;
            }
            if (n_empty_waiters > 0)
                kill(-1, SIGKILL); /* whatever was forked meanwhile */
            continue;
        }
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0 && errno == ECHILD) {
            for (int i = 0; i < n_empty_waiters; i++)
                send_event(EV_EMPTY, empty_waiters[i], 0, 0, 0, -1);
            n_empty_waiters = 0;
        }
        return;
    }
}

static void handle(struct header *h, char *body, size_t len, int *fds, int nfds) {
    switch (h->type) {
    case REQ_SPAWN:
        spawn(h, body, len, fds, nfds);
        return;
    case REQ_SIGNAL: {
        struct child *c = find_handle(h->handle);
        if (c != NULL)
            kill(h->b ? -c->pid : c->pid, h->a);
        break;
    }
    case REQ_SIGNAL_ALL:
        kill(-1, h->a); /* every process of the namespace but init */
        break;
    case REQ_KILL_ALL:
        if (n_empty_waiters < MAX_CHILDREN)
            empty_waiters[n_empty_waiters++] = h->handle;
        kill(-1, SIGKILL);
        reap();
        break;
    case REQ_SOCKET: {
        int s = socket(h->a, h->b | SOCK_CLOEXEC, 0);
        send_event(EV_SOCKET, h->handle, s < 0 ? errno : 0, 0, 0, s);
        if (s >= 0)
            close(s);
        break;
    }
    case REQ_PING:
        send_event(EV_PONG, h->handle, 0, 0, 0, -1);
        break;
    default:
        break;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* From root of the namespace (CAP_SETUID, SETGID, SETPCAP) to the function's user with no capability left. */
static void become_user(const char *spec) {
    unsigned uid, gid;
    if (sscanf(spec, "%u:%u", &uid, &gid) != 2) {
        fprintf(stderr, "lambdarun init: bad --user %s\n", spec);
        _exit(2);
    }
    if (getuid() == uid)
        return;
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            die("PR_CAPBSET_DROP");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) < 0)
        die("capget");
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &header, data) < 0)
        die("capset");
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
        die("switching to the function's user");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die("PR_SET_NO_NEW_PRIVS");
}

static int serve(int argc, char **argv) {
    int port = -1;
    const char *user = NULL;
    if (argc < 3) {
        fprintf(stderr, "usage: init serve CONTROLFD [--listen PORT] [--cgroup FD] [--user UID:GID]\n");
        return 2;
    }
    control = atoi(argv[2]);
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--cgroup") == 0 && n_cgroup_procs < MAX_CGROUPS)
            cgroup_procs[n_cgroup_procs++] = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--user") == 0)
            user = argv[i + 1];
        else if (strcmp(argv[i], "--nofile") == 0)
            nofile = (rlim_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--nproc") == 0)
            nproc = (rlim_t)strtoul(argv[i + 1], NULL, 10);
    }
    if (user != NULL)
        become_user(user);
    /* Not dumpable: the function's processes run as the same user, and must not ptrace their way to the
     * control socket. */
    prctl(PR_SET_DUMPABLE, 0);
    fcntl(control, F_SETFD, FD_CLOEXEC);
    for (int i = 0; i < n_cgroup_procs; i++)
        fcntl(cgroup_procs[i], F_SETFD, FD_CLOEXEC);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd");

    int err = 0, listener = port > 0 ? listen_on(port, &err) : -1;
    send_event(EV_READY, 0, err, (int32_t)getpid(), 0, listener);
    if (listener >= 0)
        close(listener);

    struct pollfd pfds[2] = {{control, POLLIN, 0}, {sfd, POLLIN, 0}};
    static int fds[MAX_FDS];
    for (;;) {
        if (poll(pfds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (pfds[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0)
                ;
            reap();
        }
        if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            struct iovec iov = {message, MAX_MESSAGE};
            union {
                char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
                struct cmsghdr align;
            } u;
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                 .msg_controllen = sizeof u.buf};
            ssize_t n = recvmsg(control, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0)
                _exit(0); /* lambdarun closed the sandbox, or died */
            int nfds = 0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                    continue;
                int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < count; i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    if (nfds < MAX_FDS)
                        fds[nfds++] = fd;
                    else
                        close(fd);
                }
            }
            if ((size_t)n < sizeof(struct header) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                for (int i = 0; i < nfds; i++)
                    close(fds[i]);
                if ((size_t)n >= sizeof(struct header)) {
                    struct header *h = (struct header *)message;
                    if (h->type == REQ_SPAWN)
                        send_event(EV_SPAWNED, h->handle, -E2BIG, 0, 0, -1);
                }
                continue;
            }
            struct header h;
            memcpy(&h, message, sizeof h);
            handle(&h, message + sizeof h, (size_t)n - sizeof h, fds, nfds);
        }
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "userns-exec") == 0)
        return userns_exec(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "die-with-parent") == 0)
        return die_with_parent(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve(argc, argv);
    fprintf(stderr, "usage: init userns-exec ... | init die-with-parent ... | init serve ...\n");
    return 2;
}
