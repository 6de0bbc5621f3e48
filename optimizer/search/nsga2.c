/* bitplan: NSGA-II over the additive error proxy.
 *
 * Genome: per item a rank in the item's menu of non-dominated choices
 * sorted by the first cost (then error, then index), so a mutation of +-1
 * moves to the neighbouring cheaper or dearer choice. Objectives are summed
 * in item order from 0.0, bit-identical to bp_solution_evaluate.
 *
 * Non-dominated sorting uses the efficient sequential strategy (ENS-SS):
 * individuals sorted by (violation, objectives lexicographically) can only
 * be dominated by earlier ones, so each is placed in the first front none
 * of whose members dominates it. Exact duplicates of an earlier objective
 * vector (clones) are pushed to one extra front after all others, which
 * keeps the population diverse.
 *
 * Randomness: xoshiro256** streams seeded through splitmix64 from (seed,
 * generation, pair): one stream per offspring pair, so pairs can be built in
 * parallel and the result never depends on the thread count.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/nsga2.h"
#include "search_internal.h"

#define MAX_POPULATION 100000
#define MAX_GENES ((size_t)1 << 28) /* 2 * population * items: 1 GiB of genomes */

void bp_nsga2_options_default(bp_nsga2_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->population = 100;
    o->generations = 200;
    o->seed = 1;
    o->threads = 0;
    o->crossover_prob = 0.9;
    o->mutation_prob = -1.0;
    o->use_caps = 1;
}

void bp_pareto_front_destroy(bp_pareto_front **f)
{
    if (!f || !*f)
        return;
    free((*f)->choice);
    free((*f)->objective);
    free(*f);
    *f = NULL;
}

/* ---- random numbers ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct xoshiro {
    uint64_t s[4];
} xoshiro;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xo_next(xoshiro *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Stream for (seed, a, b): splitmix64 over a mix of the three words. */
static void xo_seed(xoshiro *r, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t sm = seed;
    uint64_t h = splitmix64(&sm);
    sm = h ^ (a * 0xd1b54a32d192ed03ull);
    h = splitmix64(&sm);
    sm = h ^ (b * 0x8cb92ba72f3d8dd7ull);
    for (int k = 0; k < 4; k++)
        r->s[k] = splitmix64(&sm);
}

static uint64_t xo_below(xoshiro *r, uint64_t n) /* [0, n), n >= 1, unbiased */
{
    uint64_t lim = -n % n; /* 2^64 mod n */
    for (;;) {
        uint64_t v = xo_next(r);
        if (v >= lim)
            return v % n;
    }
}

static double xo_unit(xoshiro *r) /* [0, 1) */
{
    return (double)(xo_next(r) >> 11) * 0x1.0p-53;
}

/* Bernoulli(prob) as an integer comparison: prob * 2^64 as a threshold. */
static uint64_t threshold_of(double prob)
{
    if (prob <= 0)
        return 0;
    if (prob >= 1)
        return UINT64_MAX;
    return (uint64_t)(prob * 0x1.0p64);
}

/* ---- state ---- */

typedef struct nsga {
    const bp_problem *p;
    size_t n, m, M, N;       /* items, constraints, objectives, population */
    int nt, caps;
    uint32_t *mstart, *menu; /* per item: global choices sorted by cost 0 */
    int32_t *genes;          /* 2N * n ranks: parents then offspring */
    double *obj;             /* 2N * M */
    double *viol;            /* 2N */
    int32_t *front;          /* 2N */
    double *crowd;           /* 2N */
    size_t *order;           /* 2N work */
    double scale[BP_MAX_CONSTRAINTS];
    uint64_t seed, cx_thr, mut_thr;
    /* Archive: every distinct non-dominated (feasible with caps)
     * individual seen so far, at most amax after truncation. */
    size_t amax, an;
    int32_t *agenes;         /* (amax + N) * n */
    double *aobj;            /* (amax + N) * M */
    double *acrowd;          /* (amax + N) */
    size_t *aord;            /* (amax + N) */
    unsigned char *apin;     /* caller's seeds: never truncated */
} nsga;

static int32_t *genome(nsga *g, size_t k)
{
    return g->genes + k * g->n;
}

static void evaluate(nsga *g, size_t k)
{
    const bp_problem *p = g->p;
    const int32_t *x = genome(g, k);
    size_t m = g->m;
    double e = 0.0, T[BP_MAX_CONSTRAINTS] = {0};
    for (size_t i = 0; i < g->n; i++) {
        size_t c = g->menu[g->mstart[i] + (uint32_t)x[i]];
        e += p->error[c];
        for (size_t j = 0; j < m; j++)
            T[j] += p->cost[c * m + j];
    }
    double *o = g->obj + k * g->M;
    o[0] = e;
    double v = 0.0;
    for (size_t j = 0; j < m; j++) {
        o[1 + j] = T[j];
        if (g->caps && T[j] > p->capacity[j])
            v += (T[j] - p->capacity[j]) / g->scale[j];
    }
    g->viol[k] = v;
}

/* Deb's constrained domination. */
static int dominates(const nsga *g, size_t a, size_t b)
{
    double va = g->viol[a], vb = g->viol[b];
    if (va != vb)
        return va < vb;
    const double *x = g->obj + a * g->M, *y = g->obj + b * g->M;
    int strict = 0;
    for (size_t q = 0; q < g->M; q++) {
        if (x[q] > y[q])
            return 0;
        if (x[q] < y[q])
            strict = 1;
    }
    return strict;
}

/* Sort contexts go through glibc's qsort_r (_GNU_SOURCE), so concurrent
 * runs in different threads never share state. */
typedef struct sort_arg {
    const nsga *g;
    size_t q;
} sort_arg;

static int lex_cmp(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const nsga *g = ((const sort_arg *)arg)->g;
    if (g->viol[a] != g->viol[b])
        return g->viol[a] < g->viol[b] ? -1 : 1;
    const double *x = g->obj + a * g->M, *y = g->obj + b * g->M;
    for (size_t q = 0; q < g->M; q++)
        if (x[q] != y[q])
            return x[q] < y[q] ? -1 : 1;
    return (a > b) - (a < b);
}

static int obj_cmp(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const nsga *g = ((const sort_arg *)arg)->g;
    size_t q = ((const sort_arg *)arg)->q;
    double x = g->obj[a * g->M + q], y = g->obj[b * g->M + q];
    if (x != y)
        return x < y ? -1 : 1;
    return (a > b) - (a < b);
}

static int same_point(const nsga *g, size_t a, size_t b)
{
    if (g->viol[a] != g->viol[b])
        return 0;
    return memcmp(g->obj + a * g->M, g->obj + b * g->M, g->M * sizeof(double)) == 0;
}

/* Fronts of individuals 0..cnt-1 (ENS-SS) into g->front; returns the
 * number of fronts, 0 on allocation failure. */
static size_t nondominated_sort(nsga *g, size_t cnt)
{
    size_t *ord = g->order;
    for (size_t k = 0; k < cnt; k++)
        ord[k] = k;
    sort_arg sa = {g, 0};
    qsort_r(ord, cnt, sizeof *ord, lex_cmp, &sa);
    /* Each front is a linked list through next[], newest member first. */
    size_t *head = malloc(cnt * sizeof *head), *next = malloc(cnt * sizeof *next);
    size_t nf = 0, prev_unique = SIZE_MAX;
    size_t n_clones = 0;
    if (!head || !next) {
        free(head);
        free(next);
        return 0;
    }
    for (size_t t = 0; t < cnt; t++) {
        size_t s = ord[t];
        if (prev_unique != SIZE_MAX && same_point(g, s, prev_unique)) {
            g->front[s] = -1; /* clone, placed after every front below */
            n_clones++;
            continue;
        }
        prev_unique = s;
        size_t f;
        for (f = 0; f < nf; f++) {
            int dom = 0;
            for (size_t u = head[f]; u != SIZE_MAX; u = next[u])
                if (dominates(g, u, s)) {
                    dom = 1;
                    break;
                }
            if (!dom)
                break;
        }
        if (f == nf)
            head[nf++] = SIZE_MAX;
        /* newest first: recent members are the likeliest dominators */
        next[s] = head[f];
        head[f] = s;
        g->front[s] = (int32_t)f;
    }
    if (n_clones) {
        for (size_t k = 0; k < cnt; k++)
            if (g->front[k] < 0)
                g->front[k] = (int32_t)nf;
        nf++;
    }
    free(head);
    free(next);
    return nf;
}

/* Crowding distance of the nm members of one front (mem is reordered). */
static void crowding(nsga *g, size_t *mem, size_t nm)
{
    for (size_t t = 0; t < nm; t++)
        g->crowd[mem[t]] = 0.0;
    for (size_t q = 0; q < g->M; q++) {
        sort_arg sa = {g, q};
        qsort_r(mem, nm, sizeof *mem, obj_cmp, &sa);
        double lo = g->obj[mem[0] * g->M + q], hi = g->obj[mem[nm - 1] * g->M + q];
        g->crowd[mem[0]] = INFINITY;
        g->crowd[mem[nm - 1]] = INFINITY;
        if (!(hi > lo))
            continue;
        for (size_t t = 1; t + 1 < nm; t++) {
            double d = (g->obj[mem[t + 1] * g->M + q] - g->obj[mem[t - 1] * g->M + q]) / (hi - lo);
            g->crowd[mem[t]] += d;
        }
    }
}

static int crowd_desc(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const nsga *g = ((const sort_arg *)arg)->g;
    double x = g->crowd[a], y = g->crowd[b];
    if (x != y)
        return x > y ? -1 : 1;
    return (a > b) - (a < b);
}

/* Rank and crowd 0..cnt-1, then (if select) move the best N to 0..N-1. */
static int rank_and_select(nsga *g, size_t cnt, int select)
{
    size_t nf = nondominated_sort(g, cnt);
    if (!nf)
        return BP_ENOMEM;
    size_t *mem = malloc(cnt * sizeof *mem), *chosen = malloc(cnt * sizeof *chosen);
    if (!mem || !chosen) {
        free(mem);
        free(chosen);
        return BP_ENOMEM;
    }
    size_t taken = 0;
    for (size_t f = 0; f < nf; f++) {
        size_t nm = 0;
        for (size_t k = 0; k < cnt; k++)
            if (g->front[k] == (int32_t)f)
                mem[nm++] = k;
        crowding(g, mem, nm);
        if (!select)
            continue;
        if (taken + nm <= g->N) {
            for (size_t t = 0; t < nm; t++)
                chosen[taken++] = mem[t];
        } else if (taken < g->N) {
            sort_arg sa = {g, 0};
            qsort_r(mem, nm, sizeof *mem, crowd_desc, &sa);
            for (size_t t = 0; taken < g->N; t++)
                chosen[taken++] = mem[t];
        }
    }
    if (select) {
        /* Keep the chosen in index order, then compact into 0..N-1: the
         * slots are read in increasing order, so copying down is safe. */
        size_t *sorted = mem;
        memset(sorted, 0, cnt * sizeof *sorted);
        for (size_t t = 0; t < g->N; t++)
            sorted[chosen[t]] = 1;
        size_t at = 0;
        for (size_t k = 0; k < cnt; k++) {
            if (!sorted[k])
                continue;
            if (k != at) {
                memcpy(genome(g, at), genome(g, k), g->n * sizeof(int32_t));
                memcpy(g->obj + at * g->M, g->obj + k * g->M, g->M * sizeof(double));
                g->viol[at] = g->viol[k];
                g->front[at] = g->front[k];
                g->crowd[at] = g->crowd[k];
            }
            at++;
        }
    }
    free(mem);
    free(chosen);
    return BP_OK;
}

static size_t tournament(const nsga *g, xoshiro *r)
{
    size_t a = (size_t)xo_below(r, g->N), b = (size_t)xo_below(r, g->N);
    if (g->front[a] != g->front[b])
        return g->front[a] < g->front[b] ? a : b;
    if (g->crowd[a] != g->crowd[b])
        return g->crowd[a] > g->crowd[b] ? a : b;
    return a;
}

static void mutate(nsga *g, int32_t *x, xoshiro *r)
{
    if (!g->mut_thr)
        return;
    for (size_t i = 0; i < g->n; i++) {
        if (xo_next(r) >= g->mut_thr && g->mut_thr != UINT64_MAX)
            continue;
        int32_t k = (int32_t)(g->mstart[i + 1] - g->mstart[i]);
        if (k < 2)
            continue;
        int up = (int)(xo_next(r) >> 63);
        if (x[i] == 0)
            up = 1;
        else if (x[i] == k - 1)
            up = 0;
        x[i] += up ? 1 : -1;
    }
}

static void make_pair(nsga *g, size_t gen, size_t q)
{
    xoshiro r;
    xo_seed(&r, g->seed, gen + 1, q);
    size_t a = tournament(g, &r), b = tournament(g, &r);
    int32_t *c1 = genome(g, g->N + 2 * q), *c2 = genome(g, g->N + 2 * q + 1);
    memcpy(c1, genome(g, a), g->n * sizeof *c1);
    memcpy(c2, genome(g, b), g->n * sizeof *c2);
    if (g->cx_thr && (g->cx_thr == UINT64_MAX || xo_next(&r) < g->cx_thr)) {
        uint64_t bits = 0;
        for (size_t i = 0; i < g->n; i++) {
            if (i % 64 == 0)
                bits = xo_next(&r);
            if (bits & 1) {
                int32_t t = c1[i];
                c1[i] = c2[i];
                c2[i] = t;
            }
            bits >>= 1;
        }
    }
    mutate(g, c1, &r);
    mutate(g, c2, &r);
}

/* Per item, sorted menu: the non-dominated choices (bp__menu), ordered by
 * cost 0, then error, then index. */
static int build_menu(nsga *g, bp_error *err)
{
    bp__menu mn;
    int rc = bp__menu_build(g->p, g->nt, &mn, err);
    if (rc)
        return rc;
    const bp_problem *p = g->p;
    size_t m = g->m;
    for (size_t i = 0; i < g->n; i++) {
        uint32_t *v = mn.idx + mn.start[i];
        size_t k = mn.start[i + 1] - mn.start[i];
        for (size_t t = 0; t < k; t++)
            v[t] &= BP__INDEX_MASK;
        for (size_t t = 1; t < k; t++) { /* insertion sort: menus are short */
            uint32_t c = v[t];
            size_t u = t;
            while (u > 0) {
                uint32_t d = v[u - 1];
                double cc = p->cost[(size_t)c * m], cd = p->cost[(size_t)d * m];
                int lt = cc != cd ? cc < cd : p->error[c] != p->error[d] ? p->error[c] < p->error[d] : c < d;
                if (!lt)
                    break;
                v[u] = d;
                u--;
            }
            v[u] = c;
        }
    }
    g->mstart = mn.start;
    g->menu = mn.idx;
    return BP_OK;
}

/* Rank in item i's menu of the kept choice equal to or dominating global
 * choice c (the first one in menu order). */
static int32_t rank_of(const nsga *g, size_t i, size_t c)
{
    const bp_problem *p = g->p;
    size_t m = g->m;
    for (uint32_t t = g->mstart[i]; t < g->mstart[i + 1]; t++)
        if (g->menu[t] == c)
            return (int32_t)(t - g->mstart[i]);
    for (uint32_t t = g->mstart[i]; t < g->mstart[i + 1]; t++) {
        size_t d = g->menu[t];
        int ok = p->error[d] <= p->error[c];
        for (size_t j = 0; ok && j < m; j++)
            ok = p->cost[d * m + j] <= p->cost[c * m + j];
        if (ok)
            return (int32_t)(t - g->mstart[i]);
    }
    return 0; /* unreachable: some kept choice dominates every choice */
}

static void init_population(nsga *g, const bp_nsga2_options *o)
{
    const bp_problem *p = g->p;
    size_t m = g->m, at = 0;
    /* cheapest (first cost), most accurate */
    memset(genome(g, at++), 0, g->n * sizeof(int32_t));
    if (at < g->N) {
        int32_t *x = genome(g, at++);
        for (size_t i = 0; i < g->n; i++) {
            uint32_t best = g->mstart[i];
            for (uint32_t t = g->mstart[i] + 1; t < g->mstart[i + 1]; t++)
                if (p->error[g->menu[t]] < p->error[g->menu[best]])
                    best = t;
            x[i] = (int32_t)(best - g->mstart[i]);
        }
    }
    for (size_t s = 0; s < o->n_seeds && at < g->N; s++) {
        int32_t *x = genome(g, at++);
        for (size_t i = 0; i < g->n; i++)
            x[i] = rank_of(g, i, p->item_start[i] + (size_t)o->seeds[s][i]);
    }
    for (size_t j = 1; j < m && at < g->N; j++) {
        int32_t *x = genome(g, at++);
        for (size_t i = 0; i < g->n; i++) {
            uint32_t best = g->mstart[i];
            for (uint32_t t = g->mstart[i] + 1; t < g->mstart[i + 1]; t++) {
                double a = p->cost[(size_t)g->menu[t] * m + j], b = p->cost[(size_t)g->menu[best] * m + j];
                if (a < b || (a == b && p->error[g->menu[t]] < p->error[g->menu[best]]))
                    best = t;
            }
            x[i] = (int32_t)(best - g->mstart[i]);
        }
    }
    /* Random interpolations between cheapest and most accurate: a level t
     * per individual, stochastic rounding per item. */
    for (; at < g->N; at++) {
        xoshiro r;
        xo_seed(&r, g->seed, 0, at);
        double t = xo_unit(&r);
        int32_t *x = genome(g, at);
        for (size_t i = 0; i < g->n; i++) {
            int32_t k = (int32_t)(g->mstart[i + 1] - g->mstart[i]);
            double pos = t * (double)(k - 1) + xo_unit(&r);
            int32_t v = (int32_t)floor(pos);
            x[i] = v < 0 ? 0 : v > k - 1 ? k - 1 : v;
        }
    }
}

/* Plain Pareto comparison of objective vectors: 1 if a <= b everywhere. */
static int weakly_dominates(const double *a, const double *b, size_t M)
{
    for (size_t q = 0; q < M; q++)
        if (a[q] > b[q])
            return 0;
    return 1;
}

/* Offer individual k to the archive: rejected if a member is equal or
 * better everywhere; otherwise the members it dominates leave (order of the
 * others kept) and it is appended. */
static void archive_offer(nsga *g, size_t k, int pin)
{
    if (g->caps && g->viol[k] != 0.0)
        return;
    size_t M = g->M;
    const double *o = g->obj + k * M;
    for (size_t a = 0; a < g->an; a++)
        if (weakly_dominates(g->aobj + a * M, o, M))
            return;
    size_t at = 0;
    for (size_t a = 0; a < g->an; a++) {
        if (weakly_dominates(o, g->aobj + a * M, M))
            continue; /* strictly dominated (equal was rejected above) */
        if (a != at) {
            memcpy(g->agenes + at * g->n, g->agenes + a * g->n, g->n * sizeof(int32_t));
            memcpy(g->aobj + at * M, g->aobj + a * M, M * sizeof(double));
            g->apin[at] = g->apin[a];
        }
        at++;
    }
    memcpy(g->agenes + at * g->n, genome(g, k), g->n * sizeof(int32_t));
    memcpy(g->aobj + at * M, o, M * sizeof(double));
    g->apin[at] = (unsigned char)pin;
    g->an = at + 1;
}

static int aobj_cmp(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const sort_arg *sa = arg;
    double x = sa->g->aobj[a * sa->g->M + sa->q], y = sa->g->aobj[b * sa->g->M + sa->q];
    if (x != y)
        return x < y ? -1 : 1;
    return (a > b) - (a < b);
}

static int acrowd_asc(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const nsga *g = ((const sort_arg *)arg)->g;
    if (g->acrowd[a] != g->acrowd[b])
        return g->acrowd[a] < g->acrowd[b] ? -1 : 1;
    return (a < b) - (a > b); /* later members leave first */
}

/* Above amax members: drop the most crowded unpinned ones (crowding
 * distance over the archive, computed once per truncation). */
static void archive_truncate(nsga *g)
{
    if (g->an <= g->amax)
        return;
    size_t n = g->an, M = g->M, *ord = g->aord;
    for (size_t a = 0; a < n; a++)
        g->acrowd[a] = 0.0;
    for (size_t q = 0; q < M; q++) {
        for (size_t a = 0; a < n; a++)
            ord[a] = a;
        sort_arg sa = {g, q};
        qsort_r(ord, n, sizeof *ord, aobj_cmp, &sa);
        double lo = g->aobj[ord[0] * M + q], hi = g->aobj[ord[n - 1] * M + q];
        g->acrowd[ord[0]] = INFINITY;
        g->acrowd[ord[n - 1]] = INFINITY;
        if (!(hi > lo))
            continue;
        for (size_t t = 1; t + 1 < n; t++)
            g->acrowd[ord[t]] += (g->aobj[ord[t + 1] * M + q] - g->aobj[ord[t - 1] * M + q]) / (hi - lo);
    }
    for (size_t a = 0; a < n; a++)
        ord[a] = a;
    sort_arg sa = {g, 0};
    qsort_r(ord, n, sizeof *ord, acrowd_asc, &sa);
    size_t drop = n - g->amax;
    unsigned char *gone = (unsigned char *)g->acrowd; /* reuse: crowding no longer needed */
    size_t *victims = ord;
    size_t nv = 0;
    for (size_t t = 0; t < n && nv < drop; t++)
        if (!g->apin[ord[t]])
            victims[nv++] = ord[t];
    memset(gone, 0, n);
    for (size_t t = 0; t < nv; t++)
        gone[victims[t]] = 1;
    size_t at = 0;
    for (size_t a = 0; a < n; a++) {
        if (gone[a])
            continue;
        if (a != at) {
            memcpy(g->agenes + at * g->n, g->agenes + a * g->n, g->n * sizeof(int32_t));
            memcpy(g->aobj + at * M, g->aobj + a * M, M * sizeof(double));
            g->apin[at] = g->apin[a];
        }
        at++;
    }
    g->an = at;
}

static int check_options(const bp_problem *p, const bp_nsga2_options *o, bp_error *err)
{
    if (o->population < 4 || o->population > MAX_POPULATION || o->population % 2)
        return bp_error_set(err, BP_EINVAL,
                            "nsga2: population %zu must be even and in 4..%d", o->population,
                            MAX_POPULATION);
    if (o->generations > 1000000)
        return bp_error_set(err, BP_EINVAL, "nsga2: generations %zu above 1000000", o->generations);
    if (!(o->crossover_prob >= 0 && o->crossover_prob <= 1))
        return bp_error_set(err, BP_EINVAL, "nsga2: crossover_prob %g not in [0, 1]", o->crossover_prob);
    if (isnan(o->mutation_prob) || o->mutation_prob > 1)
        return bp_error_set(err, BP_EINVAL, "nsga2: mutation_prob %g not in [0, 1] (or < 0 for 1/items)",
                            o->mutation_prob);
    if (2 * o->population > MAX_GENES / p->n_items)
        return bp_error_set(err, BP_EINVAL,
                            "nsga2: population %zu x %zu items exceeds %zu genes", o->population,
                            p->n_items, MAX_GENES);
    if (o->archive_max > MAX_POPULATION * 10)
        return bp_error_set(err, BP_EINVAL, "nsga2: archive_max %zu above %d", o->archive_max,
                            MAX_POPULATION * 10);
    if (o->archive_max && o->archive_max < o->n_seeds)
        return bp_error_set(err, BP_EINVAL, "nsga2: archive_max %zu below the %zu seeds",
                            o->archive_max, o->n_seeds);
    size_t amax = o->archive_max ? o->archive_max : 10 * o->population;
    if (amax + o->population + 2 > MAX_GENES / p->n_items)
        return bp_error_set(err, BP_EINVAL,
                            "nsga2: archive of %zu x %zu items exceeds %zu genes", amax,
                            p->n_items, MAX_GENES);
    if (o->n_seeds > o->population - 2)
        return bp_error_set(err, BP_EINVAL, "nsga2: %zu seeds, at most population - 2 = %zu",
                            o->n_seeds, o->population - 2);
    if (o->n_seeds && !o->seeds)
        return bp_error_set(err, BP_EINVAL, "nsga2: %zu seeds but seeds is NULL", o->n_seeds);
    for (size_t s = 0; s < o->n_seeds; s++) {
        if (!o->seeds[s])
            return bp_error_set(err, BP_EINVAL, "nsga2: seed %zu is NULL", s);
        for (size_t i = 0; i < p->n_items; i++) {
            size_t k = p->item_start[i + 1] - p->item_start[i];
            if (o->seeds[s][i] < 0 || (size_t)o->seeds[s][i] >= k)
                return bp_error_set(err, BP_EINVAL,
                                    "nsga2: seed %zu: item %zu ('%.200s'): choice %d not in 0..%zu", s,
                                    i, p->item_name[i], (int)o->seeds[s][i], k - 1);
        }
    }
    return BP_OK;
}

static int out_cmp(const void *pa, const void *pb, void *arg)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const nsga *g = ((const sort_arg *)arg)->g;
    const double *x = g->aobj + a * g->M, *y = g->aobj + b * g->M;
    /* first cost, error, other costs */
    size_t ord[BP_MAX_CONSTRAINTS + 1];
    size_t no = 0;
    ord[no++] = 1;
    ord[no++] = 0;
    for (size_t q = 2; q < g->M; q++)
        ord[no++] = q;
    for (size_t t = 0; t < no; t++)
        if (x[ord[t]] != y[ord[t]])
            return x[ord[t]] < y[ord[t]] ? -1 : 1;
    /* then the choice vector (local choice indices) */
    const int32_t *ga = g->agenes + a * g->n, *gb = g->agenes + b * g->n;
    for (size_t i = 0; i < g->n; i++) {
        uint32_t ca = g->menu[g->mstart[i] + (uint32_t)ga[i]], cb = g->menu[g->mstart[i] + (uint32_t)gb[i]];
        if (ca != cb)
            return ca < cb ? -1 : 1;
    }
    return (a > b) - (a < b);
}

int bp_nsga2_run(const bp_problem *p, const bp_nsga2_options *o, bp_pareto_front **out,
                 bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "nsga2: out is NULL");
    *out = NULL;
    bp_nsga2_options def;
    if (!o) {
        bp_nsga2_options_default(&def);
        o = &def;
    }
    int rc = bp_problem_validate(p, err);
    if (rc)
        return rc;
    rc = check_options(p, o, err);
    if (rc)
        return rc;
    if (o->use_caps) {
        rc = bp__search_precheck(p, err);
        if (rc)
            return rc;
    }
    nsga g = {.p = p, .n = p->n_items, .m = p->n_constraints, .N = o->population,
              .caps = o->use_caps != 0, .seed = o->seed};
    g.M = 1 + g.m;
    g.nt = o->threads > 0 ? o->threads : omp_get_max_threads();
    g.cx_thr = threshold_of(o->crossover_prob);
    g.mut_thr = threshold_of(o->mutation_prob < 0 ? 1.0 / (double)g.n : o->mutation_prob);
    for (size_t j = 0; j < g.m; j++) {
        double sc = p->capacity[j];
        if (!(sc > 0)) {
            sc = 0.0;
            for (size_t k = 0; k < p->n_choices; k++)
                sc = fmax(sc, p->cost[k * g.m + j]);
        }
        g.scale[j] = sc > 0 ? sc : 1.0;
    }
    size_t N2 = 2 * g.N;
    bp_pareto_front *f = NULL;
    size_t *mem = NULL;
    rc = build_menu(&g, err);
    if (rc)
        goto out;
    g.genes = malloc(N2 * g.n * sizeof *g.genes);
    g.obj = malloc(N2 * g.M * sizeof *g.obj);
    g.viol = malloc(N2 * sizeof *g.viol);
    g.front = malloc(N2 * sizeof *g.front);
    g.crowd = malloc(N2 * sizeof *g.crowd);
    g.order = malloc(N2 * sizeof *g.order);
    g.amax = o->archive_max ? o->archive_max : 10 * g.N;
    size_t acap = g.amax + g.N + 2; /* room for a generation's offers */
    g.agenes = malloc(acap * g.n * sizeof *g.agenes);
    g.aobj = malloc(acap * g.M * sizeof *g.aobj);
    g.acrowd = malloc(acap * sizeof *g.acrowd);
    g.aord = malloc(acap * sizeof *g.aord);
    g.apin = malloc(acap);
    mem = malloc((N2 > acap ? N2 : acap) * sizeof *mem);
    if (!g.genes || !g.obj || !g.viol || !g.front || !g.crowd || !g.order || !mem || !g.agenes ||
        !g.aobj || !g.acrowd || !g.aord || !g.apin) {
        rc = bp_error_set(err, BP_ENOMEM, "nsga2: out of memory for %zu x %zu genes", N2, g.n);
        goto out;
    }
    init_population(&g, o);
#pragma omp parallel for schedule(dynamic, 1) num_threads(g.nt)
    for (size_t k = 0; k < g.N; k++)
        evaluate(&g, k);
    for (size_t k = 0; k < g.N; k++)
        archive_offer(&g, k, k >= 2 && k < 2 + o->n_seeds);
    archive_truncate(&g);
    rc = rank_and_select(&g, g.N, 0);
    for (size_t gen = 0; !rc && gen < o->generations; gen++) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(g.nt)
        for (size_t q = 0; q < g.N / 2; q++) {
            make_pair(&g, gen, q);
            evaluate(&g, g.N + 2 * q);
            evaluate(&g, g.N + 2 * q + 1);
        }
        for (size_t k = g.N; k < N2; k++)
            archive_offer(&g, k, 0);
        archive_truncate(&g);
        rc = rank_and_select(&g, N2, 1);
    }
    if (rc) {
        rc = bp_error_set(err, BP_ENOMEM, "nsga2: out of memory sorting the population");
        goto out;
    }
    /* Output: the archive, sorted. */
    size_t nd = g.an;
    if (!nd) {
        rc = bp_error_set(err, BP_ENOTFOUND,
                          "nsga2: no individual satisfied every cap in %zu generations",
                          o->generations);
        goto out;
    }
    for (size_t t = 0; t < nd; t++)
        mem[t] = t;
    sort_arg sa = {&g, 0};
    qsort_r(mem, nd, sizeof *mem, out_cmp, &sa);
    f = calloc(1, sizeof *f);
    if (f) {
        f->choice = malloc(nd * g.n * sizeof *f->choice);
        f->objective = malloc(nd * g.M * sizeof *f->objective);
    }
    if (!f || !f->choice || !f->objective) {
        bp_pareto_front_destroy(&f);
        rc = bp_error_set(err, BP_ENOMEM, "nsga2: out of memory for the front");
        goto out;
    }
    f->n = nd;
    f->n_items = g.n;
    f->n_objectives = g.M;
    f->generations = o->generations;
    for (size_t t = 0; t < nd; t++) {
        const int32_t *x = g.agenes + mem[t] * g.n;
        for (size_t i = 0; i < g.n; i++)
            f->choice[t * g.n + i] = (int32_t)(g.menu[g.mstart[i] + (uint32_t)x[i]] - p->item_start[i]);
        memcpy(f->objective + t * g.M, g.aobj + mem[t] * g.M, g.M * sizeof(double));
    }
    *out = f;
out:
    free(mem);
    free(g.mstart);
    free(g.menu);
    free(g.genes);
    free(g.obj);
    free(g.viol);
    free(g.front);
    free(g.crowd);
    free(g.order);
    free(g.agenes);
    free(g.aobj);
    free(g.acrowd);
    free(g.aord);
    free(g.apin);
    return rc;
}
