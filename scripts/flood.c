/*
 * flood: a paced UDP flooder for scripts/bench_flood.py (one thread, Linux, IPv4).
 *
 * A development tool, compiled by scripts/bench_flood.py with the system C compiler; not part
 * of the package. It sends from one source address (--src, e.g. 127.0.0.2, bound before
 * sending) to --dst HOST:PORT at --rate datagrams a second for --seconds, in batches of
 * sendmmsg every millisecond on an absolute schedule (a late batch is caught up, never
 * dropped), and reads and counts whatever comes back (recvmmsg, non-blocking).
 *
 * --mode sip: SIP requests, OPTIONS and INVITE (with an SDP offer, to --number) alternately,
 * each with its own branch, From tag and Call-ID (a counter written into fixed-width digits),
 * so none is a retransmission of another. --mode rtp: 172-byte PCMU RTP packets (version 2,
 * payload type 0) with one random SSRC and consecutive sequence numbers and timestamps.
 *
 * Prints one JSON line: sent, send errors (EAGAIN and the like), received, the seconds it
 * ran, and its own CPU seconds (getrusage), so a run can tell whether the flooder kept up.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 1024
#define MSG_MAX 1400

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void put_digits(char *at, uint64_t value) {
    for (int i = 9; i >= 0; i--) {
        at[i] = (char)('0' + value % 10);
        value /= 10;
    }
}

/* Every "##########" in buf is a counter slot. */
static int find_slots(const char *buf, int len, int *slots, int max) {
    int n = 0;
    for (int i = 0; i + 10 <= len && n < max; i++) {
        if (memcmp(buf + i, "##########", 10) == 0) {
            slots[n++] = i;
            i += 9;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    const char *src = "127.0.0.2", *dst = NULL, *mode = "sip", *number = "815012345678";
    double rate = 10000, seconds = 10;
    static struct option opts[] = {
        {"src", required_argument, 0, 's'},    {"dst", required_argument, 0, 'd'},
        {"rate", required_argument, 0, 'r'},   {"seconds", required_argument, 0, 't'},
        {"mode", required_argument, 0, 'm'},   {"number", required_argument, 0, 'n'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': src = optarg; break;
        case 'd': dst = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'm': mode = optarg; break;
        case 'n': number = optarg; break;
        default: return 2;
        }
    }
    if (dst == NULL || strchr(dst, ':') == NULL) {
        fprintf(stderr, "usage: flood --dst HOST:PORT [--src IP] [--rate N] [--seconds S] "
                        "[--mode sip|rtp] [--number DIGITS]\n");
        return 2;
    }
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(strchr(dst, ':') - dst), dst);
    int port = atoi(strchr(dst, ':') + 1);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &me.sin_addr);
    inet_pton(AF_INET, host, &to.sin_addr);
    to.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) != 0) {
        perror("bind");
        return 1;
    }
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    socklen_t melen = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &melen);
    int lport = ntohs(me.sin_port);

    /* Two templates for SIP (OPTIONS, INVITE), one for RTP; counter slots patched per send. */
    char tmpl[2][MSG_MAX];
    int tlen[2], slots[2][8], nslots[2] = {0, 0}, kinds = 1;
    int rtp = strcmp(mode, "rtp") == 0;
    if (rtp) {
        memset(tmpl[0], 0xFF, 172); /* PCMU silence */
        tmpl[0][0] = (char)0x80;
        tmpl[0][1] = 0;
        uint32_t ssrc = (uint32_t)now_ns() ^ 0x5EED1234u;
        memcpy(tmpl[0] + 8, &ssrc, 4);
        tlen[0] = 172;
    } else {
        const char *sdp =
            "v=0\r\no=flood 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n";
        char body[512];
        int blen = snprintf(body, sizeof body, sdp, src, src);
        const char *methods[2] = {"OPTIONS", "INVITE"};
        for (int k = 0; k < 2; k++) {
            int invite = k == 1;
            tlen[k] = snprintf(
                tmpl[k], MSG_MAX,
                "%s sip:%s@%s:%d SIP/2.0\r\n"
                "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-fl##########;rport\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:8190##########@%s>;tag=t##########\r\n"
                "To: <sip:%s@%s:%d>\r\n"
                "Call-ID: ##########@flood\r\n"
                "CSeq: 1 %s\r\n"
                "Contact: <sip:flood@%s:%d>\r\n"
                "User-Agent: flood/1\r\n"
                "%s"
                "Content-Length: %d\r\n\r\n%s",
                methods[k], number, host, port, src, lport, src, number, host, port,
                methods[k], src, lport, invite ? "Content-Type: application/sdp\r\n" : "",
                invite ? blen : 0, invite ? body : "");
            nslots[k] = find_slots(tmpl[k], tlen[k], slots[k], 8);
        }
        kinds = 2;
    }

    static char bufs[BATCH_MAX][MSG_MAX];
    static char rbufs[64][2048];
    struct iovec iov[BATCH_MAX], riov[64];
    struct mmsghdr msgs[BATCH_MAX], rmsgs[64];
    memset(msgs, 0, sizeof msgs);
    memset(rmsgs, 0, sizeof rmsgs);
    for (int i = 0; i < 64; i++) {
        riov[i].iov_base = rbufs[i];
        riov[i].iov_len = sizeof rbufs[i];
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
    }

    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    uint64_t sent = 0, errors = 0, received = 0, counter = 0;
    uint64_t next = start;
    while (1) {
        uint64_t t = now_ns();
        if (t >= end) break;
        if (t < next) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ULL),
                                  .tv_nsec = (long)(next % 1000000000ULL)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            t = now_ns();
        }
        next += 1000000ULL;
        uint64_t due = (uint64_t)((double)(t - start) * rate / 1e9);
        uint64_t todo = due > sent + errors ? due - sent - errors : 0;
        while (todo > 0) {
            int n = todo > BATCH_MAX ? BATCH_MAX : (int)todo;
            for (int i = 0; i < n; i++) {
                int k = (int)(counter % (uint64_t)kinds);
                memcpy(bufs[i], tmpl[k], (size_t)tlen[k]);
                if (rtp) {
                    uint16_t seq = htons((uint16_t)counter);
                    uint32_t ts32 = htonl((uint32_t)(counter * 160));
                    memcpy(bufs[i] + 2, &seq, 2);
                    memcpy(bufs[i] + 4, &ts32, 4);
                } else {
                    for (int s = 0; s < nslots[k]; s++) put_digits(bufs[i] + slots[k][s], counter);
                }
                counter++;
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = (size_t)tlen[k];
                msgs[i].msg_hdr.msg_name = &to;
                msgs[i].msg_hdr.msg_namelen = sizeof to;
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int done = sendmmsg(fd, msgs, (unsigned)n, 0);
            if (done < 0) {
                errors += (uint64_t)n;
                todo -= (uint64_t)n;
                continue;
            }
            sent += (uint64_t)done;
            if (done < n) errors += (uint64_t)(n - done);
            todo -= (uint64_t)n;
        }
        int got;
        while ((got = recvmmsg(fd, rmsgs, 64, MSG_DONTWAIT, NULL)) > 0) received += (uint64_t)got;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"sent\": %llu, \"errors\": %llu, \"received\": %llu, \"seconds\": %.3f, "
           "\"cpu_seconds\": %.3f}\n",
           (unsigned long long)sent, (unsigned long long)errors, (unsigned long long)received,
           (double)(now_ns() - start) / 1e9, cpu);
    return 0;
}
