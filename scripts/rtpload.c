/*
 * rtpload: the media benchmark's RTP load generator and sink (one thread, Linux, IPv4).
 *
 * A development tool, compiled by scripts/bench_media.py with the system C compiler; not part
 * of the package. For N bridged calls it plays 2N phones: phone A and phone B of every call,
 * each with its own UDP socket (as real phones have their own addresses). Every phone sends a
 * 172-byte PCMU packet every 20 ms to the relay's port for its side; the relay must deliver A's
 * packets to B and B's to A.
 *
 * Pacing: the 2N streams get evenly spaced send phases over the 20 ms period, assigned in a
 * shuffled order (so a call's two phones are not neighbours, and nothing is in step with the
 * relay's own 20 ms clock). Sends follow an absolute schedule; the generator sleeps to the next
 * due send (at most --tick-us) and, between sends, drains what came back (epoll, recvmmsg).
 * Its own lateness against the schedule is reported as the send lag: when its p99 passes a few
 * hundred microseconds or its CPU nears 100 %, the generator is the limit, not the relay.
 *
 * Stamps without spoiling the audio: the payload is silence or real speech (--payload FILE of
 * raw mu-law, each phone at its own offset), and the 160 least significant bits of the 160
 * payload bytes carry five 32-bit words: magic (and a digit-frame flag), stream number,
 * sequence number, and the send time (CLOCK_MONOTONIC ns). Flipping a mu-law code's low bit
 * moves the sample by one quantisation step, so detectors see the same speech. A packet whose
 * stamp is gone (a frame the relay replaced with silence, e.g. its DTMF clamp) counts as
 * received but unstamped.
 *
 * DTMF: with --digit-every S, phone A of every call types an in-band key every S seconds
 * (100 ms of tone at -6 dBm0 per tone, in place of the speech): the relay's detectors must
 * report them; a relay that clamps DTMF towards the peer should deliver none of those frames
 * (digit frames received are counted as leaked).
 *
 * Latency = kernel receive time (SO_TIMESTAMPNS, CLOCK_REALTIME mapped to CLOCK_MONOTONIC by a
 * re-sampled offset) minus the stamped send time, so the generator's own reading delay is not
 * counted. Reported overall and per direction (A->B, B->A); "late" is over --late-ms, or
 * --late-ms-ab for the A->B direction (a relay with a deliberate delay line on A's side).
 *
 * Protocol (stdin/stdout, one JSON line each): prints {"ports": [[a, b], ...]} (the phones'
 * ports), reads {"targets": [[relay_a, relay_b], ...]} (where phone A and phone B of each call
 * send; ignored with --loopback, where phones send straight to each other), runs, prints the
 * result. CPU of the processes given by --pid is read from /proc over the measured window, and
 * so is the time their threads and the generator spent runnable but waiting for a CPU (other
 * jobs on a shared machine): a run in which either waited long was disturbed, whatever the
 * relay did.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 20000000ULL
#define PAYLOAD 160
#define PKT (12 + PAYLOAD)
#define MAGIC 0x52544c00u /* "RTL\0"; the low byte carries flags */
#define FLAG_DIGIT 1u
#define HIST_US 2000000 /* 1 us buckets up to 2 s */
#define RX_BATCH 32
#define MAX_EVENTS 2048
#define DIGIT_FRAMES 5

typedef struct {
    int fd;
    int call, side; /* side 0 = phone A, 1 = phone B */
    struct sockaddr_in self, dst;
    uint32_t ssrc, seq;
    size_t audio_off;
    int64_t next_digit; /* packet index at which the next key starts, -1: none */
    int digit_left, digit_key;
    uint8_t *seen;
    uint32_t ovfl;
} phone_t;

typedef struct {
    uint32_t *h;
    uint64_t over, n;
} hist_t;

static phone_t *ph;
static int S;            /* phones (streams) = 2N */
static uint32_t P;       /* packets per stream */
static uint32_t seq0;    /* first measured packet index */
static int64_t rt_off;   /* CLOCK_REALTIME - CLOCK_MONOTONIC */
static uint64_t late_ns[2] = {20000000ULL, 20000000ULL}; /* by source side */
static hist_t lat[2], lag;
static uint64_t rx[2], late[2], dup_pkts, misroute, unstamped, stray, leaked, ovfl_total;
static uint64_t win_start, win_end; /* arrival window for unstamped packets */
static uint8_t tone[16][DIGIT_FRAMES][PAYLOAD];

static inline uint64_t now_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sample_offset(void) {
    uint64_t best = ~0ULL;
    for (int i = 0; i < 7; i++) {
        uint64_t m1 = now_ns(CLOCK_MONOTONIC), r = now_ns(CLOCK_REALTIME);
        uint64_t m2 = now_ns(CLOCK_MONOTONIC);
        if (m2 - m1 < best) {
            best = m2 - m1;
            rt_off = (int64_t)r - (int64_t)(m1 + (m2 - m1) / 2);
        }
    }
}

static void hist_add(hist_t *h, uint64_t ns) {
    uint64_t us = ns / 1000;
    h->n++;
    if (us < HIST_US) h->h[us]++;
    else h->over++;
}

static double hist_pct(const hist_t *h, double p) {
    if (!h->n) return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.5), c = 0;
    if (!want) want = 1;
    for (int i = 0; i < HIST_US; i++) {
        c += h->h[i];
        if (c >= want) return i + 0.5;
    }
    return HIST_US;
}

static void hist_merge(hist_t *dst, const hist_t *a, const hist_t *b) {
    for (int i = 0; i < HIST_US; i++) dst->h[i] = a->h[i] + b->h[i];
    dst->over = a->over + b->over;
    dst->n = a->n + b->n;
}

/* ITU-T G.711 mu-law from 16-bit linear. */
static uint8_t ulaw(int x) {
    int sign = x < 0 ? 0x80 : 0;
    if (x < 0) x = -x;
    if (x > 32635) x = 32635;
    x += 0x84;
    int exp = 7;
    for (int mask = 0x4000; !(x & mask) && exp > 0; mask >>= 1) exp--;
    int mant = (x >> (exp + 3)) & 0x0F;
    return (uint8_t)~(sign | (exp << 4) | mant);
}

static void make_tones(void) {
    static const double low[4] = {697, 770, 852, 941}, high[4] = {1209, 1336, 1477, 1633};
    const double amp = 32636.0 * pow(10.0, -3.17 / 20) * pow(10.0, -6.0 / 20);
    for (int k = 0; k < 16; k++)
        for (int f = 0; f < DIGIT_FRAMES; f++)
            for (int i = 0; i < PAYLOAD; i++) {
                double t = (f * PAYLOAD + i) / 8000.0;
                double x = amp * (sin(2 * M_PI * low[k / 4] * t) + sin(2 * M_PI * high[k % 4] * t));
                tone[k][f][i] = ulaw((int)lrint(x));
            }
}

static void stamp(uint8_t *pl, const uint32_t w[5]) {
    for (int i = 0; i < 160; i++) pl[i] = (uint8_t)((pl[i] & 0xFE) | ((w[i >> 5] >> (i & 31)) & 1));
}

static void unstamp(const uint8_t *pl, uint32_t w[5]) {
    memset(w, 0, 5 * sizeof w[0]);
    for (int i = 0; i < 160; i++) w[i >> 5] |= (uint32_t)(pl[i] & 1) << (i & 31);
}

static uint64_t cpu_ticks(const int *pids, int n) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += ut + st;
    }
    return total;
}

/* Nanoseconds the tasks of the given processes (and with pid 0, this one) spent runnable but
 * waiting for a CPU: other jobs' interference, from /proc/PID/task/TID/schedstat. */
static uint64_t run_delay_ns(const int *pids, int n) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%d/task", pids[i]);
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[384];
            snprintf(path, sizeof path, "%s/%s/schedstat", dir, e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            unsigned long long on = 0, wait = 0;
            if (fscanf(f, "%llu %llu", &on, &wait) == 2) total += wait;
            fclose(f);
        }
        closedir(d);
    }
    return total;
}

static uint64_t rcvbuf_errors(void) {
    FILE *f = fopen("/proc/net/snmp", "r");
    if (!f) return 0;
    char names[1024], values[1024];
    uint64_t res = 0;
    while (fgets(names, sizeof names, f)) {
        if (strncmp(names, "Udp:", 4) || !fgets(values, sizeof values, f)) continue;
        char *s1, *s2, *n = strtok_r(names, " \n", &s1), *v = strtok_r(values, " \n", &s2);
        for (; n && v; n = strtok_r(NULL, " \n", &s1), v = strtok_r(NULL, " \n", &s2))
            if (!strcmp(n, "RcvbufErrors")) res = strtoull(v, NULL, 10);
        break;
    }
    fclose(f);
    return res;
}

static void receive(int j, struct mmsghdr *mm, int got) {
    for (int i = 0; i < got; i++) {
        struct msghdr *h = &mm[i].msg_hdr;
        const uint8_t *b = h->msg_iov[0].iov_base;
        uint64_t kts = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level != SOL_SOCKET) continue;
            if (c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                kts = (uint64_t)((int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - rt_off);
            } else if (c->cmsg_type == SO_RXQ_OVFL) {
                uint32_t v;
                memcpy(&v, CMSG_DATA(c), 4);
                ovfl_total += (uint32_t)(v - ph[j].ovfl);
                ph[j].ovfl = v;
            }
        }
        if (!kts) kts = now_ns(CLOCK_MONOTONIC);
        if (mm[i].msg_len != PKT || (b[0] & 0xC0) != 0x80) {
            stray++;
            continue;
        }
        uint32_t w[5];
        unstamp(b + 12, w);
        if ((w[0] & ~0xFFu) != MAGIC || w[1] >= (uint32_t)S || w[2] >= P) {
            if (kts >= win_start && kts < win_end) unstamped++;
            continue;
        }
        uint32_t src = w[1], seq = w[2];
        phone_t *s = &ph[src];
        if ((int)src != (j ^ 1)) misroute++;
        if (s->seen[seq >> 3] & (1u << (seq & 7))) {
            dup_pkts++;
            continue;
        }
        s->seen[seq >> 3] |= (uint8_t)(1u << (seq & 7));
        if (seq < seq0) continue;
        if (w[0] & FLAG_DIGIT) leaked++;
        uint64_t tx = (uint64_t)w[3] | (uint64_t)w[4] << 32;
        uint64_t d = kts > tx ? kts - tx : 0;
        int side = s->side;
        rx[side]++;
        if (d > late_ns[side]) late[side]++;
        hist_add(&lat[side], d);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: rtpload --calls N [--duration S] [--warmup S] [--drain-ms MS] "
                    "[--tick-us US] [--payload FILE] [--digit-every S] [--late-ms MS] "
                    "[--late-ms-ab MS] [--pid PID,...] [--rcvbuf BYTES] [--loopback] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int calls = 0, tick_us = 200, drain_ms = 300, rcvbuf = 1 << 18, loopback = 0, npids = 0;
    double duration = 5, warmup = 1, digit_every = 0;
    const char *payload = NULL;
    unsigned seed = 1;
    int pids[64];
    static struct option opts[] = {
        {"calls", 1, 0, 'n'},    {"duration", 1, 0, 'd'},    {"warmup", 1, 0, 'w'},
        {"drain-ms", 1, 0, 'D'}, {"tick-us", 1, 0, 't'},     {"payload", 1, 0, 'P'},
        {"digit-every", 1, 0, 'g'}, {"late-ms", 1, 0, 'l'}, {"late-ms-ab", 1, 0, 'L'},
        {"pid", 1, 0, 'p'},      {"rcvbuf", 1, 0, 'r'},      {"loopback", 0, 0, 'b'},
        {"seed", 1, 0, 's'},     {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': calls = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'D': drain_ms = atoi(optarg); break;
        case 't': tick_us = atoi(optarg); break;
        case 'P': payload = optarg; break;
        case 'g': digit_every = atof(optarg); break;
        case 'l': late_ns[0] = late_ns[1] = (uint64_t)(atof(optarg) * 1e6); break;
        case 'L': late_ns[0] = (uint64_t)(atof(optarg) * 1e6); break;
        case 'p': {
            char *tmp = strdup(optarg), *sp, *t;
            for (t = strtok_r(tmp, ",", &sp); t && npids < 64; t = strtok_r(NULL, ",", &sp))
                pids[npids++] = atoi(t);
            free(tmp);
            break;
        }
        case 'r': rcvbuf = atoi(optarg); break;
        case 'b': loopback = 1; break;
        case 's': seed = (unsigned)atoi(optarg); break;
        default: usage();
        }
    }
    if (calls <= 0) usage();
    S = 2 * calls;
    struct rlimit rl = {(rlim_t)S + 256, (rlim_t)S + 256};
    setrlimit(RLIMIT_NOFILE, &rl);
    P = (uint32_t)((warmup + duration) * 50 + 0.5);
    seq0 = (uint32_t)(warmup * 50 + 0.5);
    for (int d = 0; d < 2; d++) lat[d].h = calloc(HIST_US, sizeof(uint32_t));
    lag.h = calloc(HIST_US, sizeof(uint32_t));
    make_tones();

    uint8_t *audio = NULL;
    size_t audio_len = 0;
    if (payload) {
        FILE *f = fopen(payload, "rb");
        if (!f) { perror(payload); return 2; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (n < 4 * PAYLOAD) { fprintf(stderr, "payload file too short\n"); return 2; }
        audio = malloc((size_t)n);
        audio_len = fread(audio, 1, (size_t)n, f);
        fclose(f);
    }

    srand(seed);
    ph = calloc((size_t)S, sizeof *ph);
    int ep = epoll_create1(0);
    printf("{\"ports\": [");
    for (int j = 0; j < S; j++) {
        phone_t *s = &ph[j];
        s->call = j / 2;
        s->side = j % 2;
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0) { perror("socket"); return 1; }
        int one = 1;
        setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        setsockopt(s->fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        struct sockaddr_in a = {.sin_family = AF_INET};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (bind(s->fd, (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
        socklen_t len = sizeof a;
        getsockname(s->fd, (struct sockaddr *)&a, &len);
        s->self = s->dst = a; /* dst: replaced by the target below */
        s->ssrc = 0x1000u + (uint32_t)j;
        s->seq = 0;
        s->seen = calloc((P + 7) / 8, 1);
        s->audio_off = audio ? ((size_t)rand() * 7919u) % (audio_len - PAYLOAD) : 0;
        s->next_digit = -1;
        if (digit_every > 0 && s->side == 0)
            s->next_digit = (int64_t)(rand() % (int)(digit_every * 50)) + 10;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)j};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
        if (s->side == 0) printf("%s[%d, ", j ? ", " : "", ntohs(a.sin_port));
        else printf("%d]", ntohs(a.sin_port));
    }
    printf("]}\n");
    fflush(stdout);

    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, stdin) <= 0) { fprintf(stderr, "no targets\n"); return 1; }
    if (loopback) {
        for (int j = 0; j < S; j++) ph[j].dst = ph[j ^ 1].self;
    } else {
        char *p = strstr(line, "targets");
        for (int j = 0; j < S; j++) {
            while (p && *p && (*p < '0' || *p > '9')) p++;
            if (!p || !*p) { fprintf(stderr, "short target list\n"); return 1; }
            int port = (int)strtol(p, &p, 10);
            ph[j].dst.sin_port = htons((uint16_t)port);
        }
    }

    /* Evenly spaced send phases, assigned to phones in a shuffled order. */
    int *order = malloc(sizeof(int) * (size_t)S);
    for (int j = 0; j < S; j++) order[j] = j;
    for (int j = S - 1; j > 0; j--) {
        int k = rand() % (j + 1), t = order[j];
        order[j] = order[k];
        order[k] = t;
    }

    static uint8_t rbuf[RX_BATCH][2048];
    static char cbuf[RX_BATCH][128];
    struct iovec iov[RX_BATCH];
    struct mmsghdr mm[RX_BATCH];
    for (int i = 0; i < RX_BATCH; i++) {
        iov[i].iov_base = rbuf[i];
        iov[i].iov_len = sizeof rbuf[i];
    }
    struct epoll_event *evs = malloc(sizeof *evs * MAX_EVENTS);
    uint8_t pkt[PKT];
    memset(pkt, 0xFF, sizeof pkt);

    sample_offset();
    const uint64_t total = (uint64_t)P * (uint64_t)S, kstat = (uint64_t)seq0 * (uint64_t)S;
    uint64_t t0 = now_ns(CLOCK_MONOTONIC) + 100000000ULL;
    win_start = t0 + (uint64_t)seq0 * PERIOD_NS;
    win_end = t0 + (uint64_t)P * PERIOD_NS + 50000000ULL;
    uint64_t k = 0, resampled = t0, sent = 0, send_err = 0, digits_sent = 0, digit_frames = 0;
    uint64_t digits_total = 0;
    uint64_t cpu0 = 0, cpu1 = 0, w0 = 0, w1 = 0, snmp0 = 0, snmp1 = 0;
    uint64_t rdel0 = 0, rdel1 = 0, gdel0 = 0, gdel1 = 0;
    int self_pid[1] = {getpid()};
    struct rusage ru0, ru1;
    memset(&ru0, 0, sizeof ru0);
    memset(&ru1, 0, sizeof ru1);
    uint64_t end = t0 + (uint64_t)P * PERIOD_NS + (uint64_t)drain_ms * 1000000ULL;

    for (;;) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (now - resampled > 1000000000ULL && now > resampled) {
            sample_offset();
            resampled = now;
        }
        while (k < total) {
            uint64_t due = t0 + k * PERIOD_NS / (uint64_t)S;
            if (due > now) {
                now = now_ns(CLOCK_MONOTONIC);
                if (due > now) break;
            }
            if (k == kstat) {
                w0 = now;
                cpu0 = cpu_ticks(pids, npids);
                rdel0 = run_delay_ns(pids, npids);
                gdel0 = run_delay_ns(self_pid, 1);
                snmp0 = rcvbuf_errors();
                getrusage(RUSAGE_SELF, &ru0);
            }
            int j = order[k % (uint64_t)S];
            phone_t *s = &ph[j];
            uint32_t seq = s->seq++;
            uint32_t flags = 0;
            uint8_t *pl = pkt + 12;
            if (s->next_digit >= 0 && (int64_t)seq >= s->next_digit && !s->digit_left) {
                s->digit_left = DIGIT_FRAMES;
                s->digit_key = (int)((seq / 7 + (uint32_t)s->call) % 12);
                s->next_digit += (int64_t)(digit_every * 50);
                digits_total++;
                if (seq >= seq0) digits_sent++;
            }
            if (s->digit_left) {
                memcpy(pl, tone[s->digit_key][DIGIT_FRAMES - s->digit_left], PAYLOAD);
                s->digit_left--;
                flags = FLAG_DIGIT;
                if (seq >= seq0) digit_frames++;
            } else if (audio) {
                memcpy(pl, audio + (s->audio_off + (size_t)seq * PAYLOAD) % (audio_len - PAYLOAD),
                       PAYLOAD);
            } else {
                memset(pl, 0xFF, PAYLOAD);
            }
            pkt[0] = 0x80;
            pkt[1] = seq == 0 ? 0x80 : 0x00;
            uint16_t s16 = (uint16_t)seq;
            uint32_t ts = seq * 160u;
            pkt[2] = (uint8_t)(s16 >> 8); pkt[3] = (uint8_t)s16;
            pkt[4] = (uint8_t)(ts >> 24); pkt[5] = (uint8_t)(ts >> 16);
            pkt[6] = (uint8_t)(ts >> 8); pkt[7] = (uint8_t)ts;
            pkt[8] = (uint8_t)(s->ssrc >> 24); pkt[9] = (uint8_t)(s->ssrc >> 16);
            pkt[10] = (uint8_t)(s->ssrc >> 8); pkt[11] = (uint8_t)s->ssrc;
            uint64_t tx = now_ns(CLOCK_MONOTONIC);
            uint32_t w[5] = {MAGIC | flags, (uint32_t)j, seq, (uint32_t)tx, (uint32_t)(tx >> 32)};
            stamp(pl, w);
            if (sendto(s->fd, pkt, PKT, 0, (struct sockaddr *)&s->dst, sizeof s->dst) != PKT)
                send_err++;
            if (seq >= seq0) {
                sent++;
                hist_add(&lag, tx > due ? tx - due : 0);
            }
            k++;
            if (k == total) {
                w1 = now_ns(CLOCK_MONOTONIC);
                cpu1 = cpu_ticks(pids, npids);
                rdel1 = run_delay_ns(pids, npids);
                gdel1 = run_delay_ns(self_pid, 1);
                getrusage(RUSAGE_SELF, &ru1);
            }
            if ((k & 127) == 0) break; /* a long burst: read in between */
        }
        for (int pass = 0; pass < 16; pass++) {
            int n = epoll_wait(ep, evs, MAX_EVENTS, 0);
            if (n <= 0) break;
            for (int e = 0; e < n; e++) {
                int j = (int)evs[e].data.u32;
                for (int i = 0; i < RX_BATCH; i++) {
                    memset(&mm[i].msg_hdr, 0, sizeof mm[i].msg_hdr);
                    mm[i].msg_hdr.msg_iov = &iov[i];
                    mm[i].msg_hdr.msg_iovlen = 1;
                    mm[i].msg_hdr.msg_control = cbuf[i];
                    mm[i].msg_hdr.msg_controllen = sizeof cbuf[i];
                }
                int got = recvmmsg(ph[j].fd, mm, RX_BATCH, MSG_DONTWAIT, NULL);
                if (got > 0) receive(j, mm, got);
            }
            if (n < MAX_EVENTS) break;
        }
        now = now_ns(CLOCK_MONOTONIC);
        if (k >= total && now >= end) break;
        uint64_t next = k < total ? t0 + k * PERIOD_NS / (uint64_t)S : now + (uint64_t)tick_us * 1000;
        if (next > now + (uint64_t)tick_us * 1000) next = now + (uint64_t)tick_us * 1000;
        if (next > now) {
            struct timespec dl = {.tv_sec = (time_t)(next / 1000000000ULL),
                                  .tv_nsec = (long)(next % 1000000000ULL)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL) == EINTR) {}
        }
    }
    snmp1 = rcvbuf_errors();

    uint64_t received = rx[0] + rx[1] + unstamped;
    uint64_t lost = sent > received ? sent - received : 0;
    double window = (double)(w1 - w0) / 1e9;
    double hz = (double)sysconf(_SC_CLK_TCK);
    double relay_cpu = npids ? (double)(cpu1 - cpu0) / hz / window : -1;
    double gen_cpu = ((double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                      (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                      (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                      (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6) / window;
    hist_t all = {calloc(HIST_US, sizeof(uint32_t)), 0, 0};
    hist_merge(&all, &lat[0], &lat[1]);
    printf("{\"calls\": %d, \"window_s\": %.3f, \"sent\": %lu, \"received\": %lu, \"lost\": %lu, "
           "\"late\": %lu, \"late_ab\": %lu, \"late_ba\": %lu, \"unstamped\": %lu, \"dup\": %lu, "
           "\"misroute\": %lu, \"stray\": %lu, \"send_err\": %lu, \"digits_sent\": %lu, "
           "\"digits_total\": %lu, "
           "\"digit_frames\": %lu, \"digit_frames_leaked\": %lu, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, "
           "\"ab_p50_ms\": %.3f, \"ab_p99_ms\": %.3f, \"ba_p50_ms\": %.3f, \"ba_p99_ms\": %.3f, "
           "\"relay_cpu\": %.4f, \"gen_cpu\": %.4f, \"lag_p50_us\": %.1f, \"lag_p99_us\": %.1f, "
           "\"gen_drops\": %lu, \"rcvbuf_errors\": %lu, \"relay_wait_ms\": %.1f, "
           "\"gen_wait_ms\": %.1f}\n",
           calls, window, sent, received, lost, late[0] + late[1], late[0], late[1], unstamped,
           dup_pkts, misroute, stray, send_err, digits_sent, digits_total, digit_frames, leaked,
           hist_pct(&all, 0.5) / 1e3, hist_pct(&all, 0.99) / 1e3, hist_pct(&all, 0.999) / 1e3,
           hist_pct(&lat[0], 0.5) / 1e3, hist_pct(&lat[0], 0.99) / 1e3,
           hist_pct(&lat[1], 0.5) / 1e3, hist_pct(&lat[1], 0.99) / 1e3, relay_cpu, gen_cpu,
           hist_pct(&lag, 0.5), hist_pct(&lag, 0.99), ovfl_total, snmp1 - snmp0,
           (double)(rdel1 - rdel0) / 1e6, (double)(gdel1 - gdel0) / 1e6);
    fflush(stdout);
    return 0;
}
