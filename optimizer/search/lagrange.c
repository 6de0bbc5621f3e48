/* bitplan: Lagrangian relaxation with repair for very large problems.
 *
 * One constraint: per item the lower convex hull of (cost, error); every
 * item starts at its cheapest hull point and the hull increments (steps to
 * the next hull point) are taken in order of decreasing slope (error saved
 * per unit of cost) while they fit: the classic greedy whose fractional
 * completion is the LP optimum of the multiple-choice knapsack. The
 * critical slope (the multiplier lambda*) is found without sorting all
 * increments: a radix selection over the bit patterns of the slopes
 * (positive doubles order like their bits), 14 bits per pass, until the
 * critical bucket is small enough to sort. L(lambda*) is then the LP value,
 * a lower bound on the integer optimum.
 *
 * Several constraints: coordinate ascent (exact 1-D bisection per
 * multiplier) and projected subgradient steps (Polyak step towards the best
 * feasible objective, halving schedule) on the multiplier vector; repair
 * and improvement from the Lagrangian minimizer of the best multipliers.
 *
 * Every pass runs over fixed chunks of items and keeps per-chunk partial
 * sums, combined in chunk order: results never depend on the thread count.
 */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/lagrange.h"
#include "search_internal.h"

#define RADIX_BITS 14
#define RADIX_BINS ((size_t)1 << RADIX_BITS)
#define COLLECT_MAX ((size_t)1 << 16) /* sort the critical bucket below this */

void bp_lagrange_options_default(bp_lagrange_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->threads = 0;
    o->max_iterations = 200;
    o->coord_sweeps = 3;
    o->improve_rounds = 16;
}

typedef struct ctx {
    const bp_problem *p;
    bp__menu mn;
    int nt;                 /* threads */
    size_t n, m, n_chunks;
    double scale[BP_MAX_CONSTRAINTS]; /* normalization of each constraint */
    double *part;           /* n_chunks * (4 + m) partial sums */
} ctx;

static size_t chunk_lo(size_t c)
{
    return c * BP__SEARCH_CHUNK;
}

static size_t chunk_hi(const ctx *x, size_t c)
{
    size_t hi = (c + 1) * BP__SEARCH_CHUNK;
    return hi < x->n ? hi : x->n;
}

static inline double cost_of(const ctx *x, size_t k, size_t j)
{
    return x->p->cost[k * x->m + j];
}

/* Lower bound margin for a sum of n computed terms whose magnitudes sum to
 * `mag`: each term carries a few roundings, the recursive sums at most n
 * more (|error| <= n * eps * sum of magnitudes, with room to spare). */
static double margin(size_t n, double mag)
{
    return ((double)n + 16.0) * DBL_EPSILON * mag;
}

static void set_gap(bp_solution *s)
{
    if (s->bound > s->objective)
        s->bound = s->objective;
    s->gap = (s->objective - s->bound) / fmax(fabs(s->objective), 1e-300);
    s->status = s->gap == 0.0 ? BP_SOLVE_OPTIMAL : BP_SOLVE_FEASIBLE;
}

/* ---- candidate moves (repair and improvement) ---- */

typedef struct cand {
    double score;
    uint32_t item;
    uint32_t choice; /* global index */
} cand;

typedef struct cvec {
    cand *v;
    size_t n, cap;
    int oom;
} cvec;

static void cvec_push(cvec *c, cand x)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        cand *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->oom = 1;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = x;
}

static int cand_asc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

static int cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

typedef int (*cand_cmp)(const void *, const void *);

static void cswap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Move the best k of v[0..n) (by cmp, a total order) to the front and sort
 * them: quickselect (median-of-three pivot, deterministic) then qsort.
 * Candidates are applied best first and most rounds stop after a few, so
 * selecting blocks is much cheaper than sorting millions of them. */
static void best_block(cand *v, size_t n, size_t k, cand_cmp cmp)
{
    if (k >= n) {
        qsort(v, n, sizeof *v, cmp);
        return;
    }
    size_t lo = 0, hi = n - 1; /* the k-th (0-based k-1) element's range */
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp(&v[mid], &v[lo]) < 0)
            cswap(&v[mid], &v[lo]);
        if (cmp(&v[hi], &v[lo]) < 0)
            cswap(&v[hi], &v[lo]);
        if (cmp(&v[hi], &v[mid]) < 0)
            cswap(&v[hi], &v[mid]);
        cand pv = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (cmp(&v[i], &pv) < 0)
                i++;
            while (cmp(&v[j], &pv) > 0)
                j--;
            if (i <= j) {
                cswap(&v[i], &v[j]);
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort(v, k, sizeof *v, cmp);
}

#define BLOCK_CANDS 1024

enum { MODE_REPAIR, MODE_UNVIOLATE, MODE_IMPROVE };

static double violation(const ctx *x, const double *T, const double *C)
{
    double v = 0.0;
    for (size_t j = 0; j < x->m; j++)
        if (T[j] > C[j])
            v += (T[j] - C[j]) / x->scale[j];
    return v;
}

/* Score of moving item i from its current choice to global choice k, or
 * NAN if the move is not allowed in this mode. Repair (constraint j):
 * error increase per unit of j removed, lower is better, others may not get
 * worse past their caps. Unviolate: error increase per unit of total
 * normalized violation removed. Improve: error decrease per share of the
 * tightest slack used, higher is better, every cap kept. */
static double move_score(const ctx *x, int mode, size_t j, size_t cur, size_t k, const double *T,
                         const double *C)
{
    const bp_problem *p = x->p;
    size_t m = x->m;
    double de = p->error[k] - p->error[cur];
    if (mode == MODE_REPAIR) {
        double d = cost_of(x, cur, j) - cost_of(x, k, j);
        if (!(d > 0))
            return NAN;
        for (size_t q = 0; q < m; q++) {
            if (q == j)
                continue;
            double dq = cost_of(x, k, q) - cost_of(x, cur, q);
            if (dq > 0 && !(T[q] + dq <= C[q]))
                return NAN;
        }
        return de / d;
    }
    if (mode == MODE_UNVIOLATE) {
        double T2[BP_MAX_CONSTRAINTS];
        for (size_t q = 0; q < m; q++)
            T2[q] = T[q] + (cost_of(x, k, q) - cost_of(x, cur, q));
        double r = violation(x, T, C) - violation(x, T2, C);
        if (!(r > 0))
            return NAN;
        return de / r;
    }
    if (!(de < 0))
        return NAN;
    double use = 0.0;
    for (size_t q = 0; q < m; q++) {
        double dq = cost_of(x, k, q) - cost_of(x, cur, q);
        if (dq <= 0)
            continue;
        double slack = C[q] - T[q];
        if (!(dq <= slack))
            return NAN;
        double u = dq / slack;
        if (u > use)
            use = u;
    }
    return use > 0 ? -de / use : INFINITY;
}

/* One best move per item (lowest score for repair modes, highest for
 * improve; ties: earliest in the menu), collected per chunk and merged in
 * chunk order (item order). Unsorted: see next_block. */
static int collect(ctx *x, int mode, size_t j, const int32_t *choice, const double *T,
                   const double *C, cand **out, size_t *n_out)
{
    const bp_problem *p = x->p;
    cvec *vs = calloc(x->n_chunks, sizeof *vs);
    if (!vs)
        return BP_ENOMEM;
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < x->n_chunks; c++) {
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            size_t cur = p->item_start[i] + (size_t)choice[i];
            double best = NAN;
            uint32_t bk = 0;
            uint32_t t0 = x->mn.start[i], t1 = x->mn.start[i + 1];
            if (mode == MODE_IMPROVE && x->m == 1) {
                /* Staircase in cost order: only choices after the current
                 * one are more accurate, and only those within the slack
                 * fit, so scan from the current one while they fit. */
                uint32_t t = t0;
                while (t < t1 && (x->mn.idx[t] & BP__INDEX_MASK) != cur)
                    t++;
                if (t < t1) {
                    double lim = cost_of(x, cur, 0) + (C[0] - T[0]);
                    t0 = t + 1;
                    while (t1 > t0 && cost_of(x, x->mn.idx[t1 - 1] & BP__INDEX_MASK, 0) > lim)
                        t1--;
                }
            }
            for (uint32_t t = t0; t < t1; t++) {
                size_t k = x->mn.idx[t] & BP__INDEX_MASK;
                if (k == cur)
                    continue;
                double sc = move_score(x, mode, j, cur, k, T, C);
                if (isnan(sc))
                    continue;
                if (isnan(best) || (mode == MODE_IMPROVE ? sc > best : sc < best)) {
                    best = sc;
                    bk = (uint32_t)k;
                }
            }
            if (!isnan(best))
                cvec_push(&vs[c], (cand){best, (uint32_t)i, bk});
        }
    }
    size_t total = 0;
    int oom = 0;
    for (size_t c = 0; c < x->n_chunks; c++) {
        total += vs[c].n;
        oom |= vs[c].oom;
    }
    cand *all = oom ? NULL : malloc((total ? total : 1) * sizeof *all);
    if (all) {
        size_t at = 0;
        for (size_t c = 0; c < x->n_chunks; c++) {
            if (vs[c].n)
                memcpy(all + at, vs[c].v, vs[c].n * sizeof *all);
            at += vs[c].n;
        }
    }
    for (size_t c = 0; c < x->n_chunks; c++)
        free(vs[c].v);
    free(vs);
    if (!all)
        return BP_ENOMEM;
    *out = all;
    *n_out = total;
    return BP_OK;
}

static void apply_move(ctx *x, int32_t *choice, double *T, size_t i, size_t k)
{
    size_t cur = x->p->item_start[i] + (size_t)choice[i];
    for (size_t q = 0; q < x->m; q++)
        T[q] += cost_of(x, k, q) - cost_of(x, cur, q);
    choice[i] = (int32_t)(k - x->p->item_start[i]);
}

static int feasible(const ctx *x, const double *T, const double *C)
{
    for (size_t j = 0; j < x->m; j++)
        if (!(T[j] <= C[j]))
            return 0;
    return 1;
}

/* Make T <= C: reduce the most violated constraint (normalized) by the
 * moves with the least error increase per unit removed; if none is
 * allowed, reduce the total normalized violation. Returns BP_OK,
 * BP_ESOLVER (stuck) or BP_ENOMEM. */
static int repair(ctx *x, int32_t *choice, double *T, const double *C)
{
    for (int round = 0; round < 1000; round++) {
        size_t j = 0;
        double worst = 0.0;
        for (size_t q = 0; q < x->m; q++) {
            double v = (T[q] - C[q]) / x->scale[q];
            if (v > worst) {
                worst = v;
                j = q;
            }
        }
        if (!(worst > 0))
            return BP_OK;
        size_t applied = 0;
        for (int mode = MODE_REPAIR; mode <= MODE_UNVIOLATE && !applied; mode++) {
            cand *cv;
            size_t nc;
            int rc = collect(x, mode, j, choice, T, C, &cv, &nc);
            if (rc)
                return rc;
            int done = 0;
            for (size_t b0 = 0; b0 < nc && !done; b0 += BLOCK_CANDS) {
                size_t bk = nc - b0 < BLOCK_CANDS ? nc - b0 : BLOCK_CANDS;
                best_block(cv + b0, nc - b0, bk, cand_asc);
                for (size_t t = b0; t < b0 + bk; t++) {
                    if (mode == MODE_REPAIR ? T[j] <= C[j] : feasible(x, T, C)) {
                        done = 1;
                        break;
                    }
                    size_t i = cv[t].item;
                    size_t cur = x->p->item_start[i] + (size_t)choice[i];
                    if (isnan(move_score(x, mode, j, cur, cv[t].choice, T, C)))
                        continue;
                    apply_move(x, choice, T, i, cv[t].choice);
                    applied++;
                }
            }
            free(cv);
        }
        if (!applied)
            return BP_ESOLVER;
    }
    return feasible(x, T, C) ? BP_OK : BP_ESOLVER;
}

/* Spend slack on upgrades, best error decrease per share of the tightest
 * remaining slack first; any kept (non-dominated) choice, hull or not. */
static int improve(ctx *x, int32_t *choice, double *T, const double *C, int rounds)
{
    for (int round = 0; round < rounds; round++) {
        cand *cv;
        size_t nc, applied = 0;
        int rc = collect(x, MODE_IMPROVE, 0, choice, T, C, &cv, &nc);
        if (rc)
            return rc;
        /* Blocks of the best candidates; a block with no applicable move
         * ends the round (the slack is used up for this ranking; the next
         * round re-collects only moves that still fit). */
        for (size_t b0 = 0; b0 < nc; b0 += BLOCK_CANDS) {
            size_t bk = nc - b0 < BLOCK_CANDS ? nc - b0 : BLOCK_CANDS, in_block = 0;
            best_block(cv + b0, nc - b0, bk, cand_desc);
            for (size_t t = b0; t < b0 + bk; t++) {
                size_t i = cv[t].item;
                size_t cur = x->p->item_start[i] + (size_t)choice[i];
                if (isnan(move_score(x, MODE_IMPROVE, 0, cur, cv[t].choice, T, C)))
                    continue;
                apply_move(x, choice, T, i, cv[t].choice);
                in_block++;
            }
            applied += in_block;
            if (!in_block)
                break;
        }
        free(cv);
        if (!applied)
            break;
    }
    return BP_OK;
}

/* Repair, improve, and make sure the totals recomputed in item order (as
 * bp_solution_evaluate does) are within the capacities: incremental
 * updates can drift by rounding with fractional costs, in which case the
 * target is tightened by the drift and the repair repeated. */
static int finish(ctx *x, bp_solution *s, int improve_rounds)
{
    const double *cap = x->p->capacity;
    double C[BP_MAX_CONSTRAINTS], T[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < x->m; j++)
        C[j] = cap[j];
    for (int attempt = 0; attempt < 6; attempt++) {
        int rc = bp_solution_evaluate(x->p, s, NULL);
        if (rc)
            return rc;
        if (attempt > 0) {
            if (feasible(x, s->cost_total, cap))
                return BP_OK;
            for (size_t j = 0; j < x->m; j++)
                if (s->cost_total[j] > cap[j])
                    C[j] -= (s->cost_total[j] - cap[j]) +
                            DBL_EPSILON * fabs(cap[j]) * (double)(1 << attempt);
        }
        memcpy(T, s->cost_total, sizeof T);
        rc = repair(x, s->choice, T, C);
        if (rc)
            return rc;
        if (attempt == 0 && improve_rounds > 0) {
            rc = improve(x, s->choice, T, C, improve_rounds);
            if (rc)
                return rc;
        }
    }
    return BP_ESOLVER;
}

/* ---- one constraint: hull increments and radix selection ---- */

static inline uint64_t key_of(double slope)
{
    uint64_t k;
    memcpy(&k, &slope, sizeof k);
    return k;
}

static inline double slope_of_key(uint64_t k)
{
    double d;
    memcpy(&d, &k, sizeof d);
    return d;
}

typedef struct inc {
    uint64_t key;
    uint32_t item, pos; /* pos: the increment from hull point pos to pos+1 */
    double dw;
} inc;

static int inc_cmp(const void *a, const void *b)
{
    const inc *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The hull points of item i (global indices, cost order) into h; count. */
static size_t hull_of(const ctx *x, size_t i, uint32_t *h)
{
    size_t nh = 0;
    for (uint32_t t = x->mn.start[i]; t < x->mn.start[i + 1]; t++)
        if (x->mn.idx[t] & BP__HULL_FLAG)
            h[nh++] = x->mn.idx[t] & BP__INDEX_MASK;
    return nh;
}

/* Increment (key, item, pos) is taken iff it comes before the cut in the
 * order (key descending, item ascending, pos ascending). */
typedef struct cut {
    uint64_t key;
    size_t item, pos;
} cut;

static inline int taken(uint64_t key, size_t item, size_t pos, const cut *c)
{
    if (key != c->key)
        return key > c->key;
    if (item != c->item)
        return item < c->item;
    return pos < c->pos;
}

/* Finds the cut: the first increment whose cumulative cost exceeds R.
 * Returns BP_OK, BP_ENOMEM. *all_fit = 1 when every increment fits. */
static int select_cut(ctx *x, double R, cut *out, int *all_fit)
{
    size_t nch = x->n_chunks, maxh = x->mn.max_kept;
    int rc = BP_OK;
    uint32_t *cnt = malloc(nch * RADIX_BINS * sizeof *cnt);
    double *wb = malloc(nch * RADIX_BINS * sizeof *wb);
    uint32_t *hbuf = malloc((size_t)x->nt * (maxh ? maxh : 1) * sizeof *hbuf);
    inc *list = NULL;
    if (!cnt || !wb || !hbuf) {
        rc = BP_ENOMEM;
        goto out;
    }
    uint64_t prefix = 0; /* resolved bits [hi_bit, 63) of the critical key */
    int hi_bit = 63;
    double w_above = 0.0; /* cost of all increments with a larger key */
    size_t count = 0, last_bin = 0;
    *all_fit = 0;
    for (;;) {
        int shift = hi_bit > RADIX_BITS ? hi_bit - RADIX_BITS : 0;
        size_t nb = (size_t)1 << (hi_bit - shift);
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
        for (size_t c = 0; c < nch; c++) {
            uint32_t *h = hbuf + (size_t)omp_get_thread_num() * maxh;
            uint32_t *cc = cnt + c * RADIX_BINS;
            double *ww = wb + c * RADIX_BINS;
            memset(cc, 0, nb * sizeof *cc);
            memset(ww, 0, nb * sizeof *ww);
            for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
                size_t nh = hull_of(x, i, h);
                for (size_t t = 0; t + 1 < nh; t++) {
                    double e0 = x->p->error[h[t]], w0 = cost_of(x, h[t], 0);
                    double e1 = x->p->error[h[t + 1]], w1 = cost_of(x, h[t + 1], 0);
                    uint64_t k = key_of(bp__slope(e0, w0, e1, w1));
                    if ((k >> hi_bit) != prefix)
                        continue;
                    size_t b = (size_t)(k >> shift) & (nb - 1);
                    cc[b]++;
                    ww[b] += w1 - w0;
                }
            }
        }
        /* Walk buckets from the largest slopes down. Per-bucket sums are
         * combined in chunk order. Rounding can make the sub-buckets'
         * total differ from their parent's: if no bucket crosses R the
         * lowest non-empty one is taken (the cut only steers the
         * heuristic; feasibility is re-checked exactly later). */
        size_t crit = SIZE_MAX, last = SIZE_MAX;
        double w_last_above = w_above;
        for (size_t b = nb; b-- > 0;) {
            size_t nbin = 0;
            double wbin = 0.0;
            for (size_t c = 0; c < nch; c++) {
                nbin += cnt[c * RADIX_BINS + b];
                wbin += wb[c * RADIX_BINS + b];
            }
            if (!nbin)
                continue;
            if (w_above + wbin > R) {
                crit = b;
                count = nbin;
                break;
            }
            last = b;
            count = nbin;
            w_last_above = w_above;
            w_above += wbin;
        }
        if (crit == SIZE_MAX) {
            if (hi_bit == 63) { /* everything fits */
                *all_fit = 1;
                goto out;
            }
            crit = last;
            w_above = w_last_above;
        }
        last_bin = crit;
        prefix = (prefix << (hi_bit - shift)) | crit;
        hi_bit = shift;
        if (hi_bit == 0 || count <= COLLECT_MAX)
            break;
    }
    if (hi_bit == 0 && count > COLLECT_MAX) {
        /* One key value shared by many increments: the order among them is
         * (item, pos), so a serial scan in item order finds the cut. */
        out->key = prefix;
        out->item = x->n;
        out->pos = 0;
        double cum = w_above;
        for (size_t i = 0; i < x->n && out->item == x->n; i++) {
            size_t nh = hull_of(x, i, hbuf);
            for (size_t t = 0; t + 1 < nh; t++) {
                double e0 = x->p->error[hbuf[t]], w0 = cost_of(x, hbuf[t], 0);
                double e1 = x->p->error[hbuf[t + 1]], w1 = cost_of(x, hbuf[t + 1], 0);
                if (key_of(bp__slope(e0, w0, e1, w1)) != prefix)
                    continue;
                cum += w1 - w0;
                if (cum > R) {
                    out->item = i;
                    out->pos = t;
                    break;
                }
            }
        }
        goto out;
    }
    /* Collect the critical bucket (count known per chunk), sort, walk. */
    size_t *off = malloc((nch + 1) * sizeof *off);
    list = malloc((count ? count : 1) * sizeof *list);
    if (!off || !list) {
        free(off);
        rc = BP_ENOMEM;
        goto out;
    }
    /* Per-chunk counts of the bucket come from the last histogram. */
    off[0] = 0;
    for (size_t c = 0; c < nch; c++)
        off[c + 1] = cnt[c * RADIX_BINS + last_bin];
    for (size_t c = 0; c < nch; c++)
        off[c + 1] += off[c];
    count = off[nch];
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < nch; c++) {
        uint32_t *h = hbuf + (size_t)omp_get_thread_num() * maxh;
        size_t at = off[c];
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            size_t nh = hull_of(x, i, h);
            for (size_t t = 0; t + 1 < nh; t++) {
                double e0 = x->p->error[h[t]], w0 = cost_of(x, h[t], 0);
                double e1 = x->p->error[h[t + 1]], w1 = cost_of(x, h[t + 1], 0);
                uint64_t k = key_of(bp__slope(e0, w0, e1, w1));
                if ((k >> hi_bit) == prefix)
                    list[at++] = (inc){k, (uint32_t)i, (uint32_t)t, w1 - w0};
            }
        }
    }
    free(off);
    qsort(list, count, sizeof *list, inc_cmp);
    double cum = w_above;
    size_t t;
    for (t = 0; t < count; t++) {
        cum += list[t].dw;
        if (cum > R)
            break;
    }
    if (t < count) {
        out->key = list[t].key;
        out->item = list[t].item;
        out->pos = list[t].pos;
    } else if (count) { /* rounding: take the whole bucket */
        out->key = list[count - 1].key;
        out->item = list[count - 1].item;
        out->pos = (size_t)list[count - 1].pos + 1;
    } else {
        out->key = prefix << hi_bit;
        out->item = x->n;
        out->pos = 0;
    }
out:
    free(list);
    free(cnt);
    free(wb);
    free(hbuf);
    return rc;
}

/* Sum over items of min over hull points of (error + lam * cost), and the
 * sum of the magnitudes involved (for the rounding margin). */
static void dual_sum_hull(ctx *x, double lam, double *S, double *mag)
{
    size_t st = 2;
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < x->n_chunks; c++) {
        double s = 0.0, a = 0.0;
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            double best = INFINITY, bmag = 0.0;
            for (uint32_t t = x->mn.start[i]; t < x->mn.start[i + 1]; t++) {
                if (!(x->mn.idx[t] & BP__HULL_FLAG))
                    continue;
                size_t k = x->mn.idx[t] & BP__INDEX_MASK;
                double e = x->p->error[k], w = cost_of(x, k, 0);
                double v = e + lam * w;
                if (v < best) {
                    best = v;
                    bmag = fabs(e) + lam * w;
                }
            }
            s += best;
            a += bmag;
        }
        x->part[c * st] = s;
        x->part[c * st + 1] = a;
    }
    double s = 0.0, a = 0.0;
    for (size_t c = 0; c < x->n_chunks; c++) {
        s += x->part[c * st];
        a += x->part[c * st + 1];
    }
    *S = s;
    *mag = a;
}

static int solve_one(ctx *x, const bp_lagrange_options *o, bp_solution *s, bp_error *err)
{
    const bp_problem *p = x->p;
    size_t maxh = x->mn.max_kept ? x->mn.max_kept : 1;
    uint32_t *hbuf = malloc((size_t)x->nt * maxh * sizeof *hbuf);
    if (!hbuf)
        return bp_error_set(err, BP_ENOMEM, "lagrange: out of memory");
    /* Pass A: cost of the cheapest hull points; bound L(0). */
    size_t st = 3;
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < x->n_chunks; c++) {
        uint32_t *h = hbuf + (size_t)omp_get_thread_num() * maxh;
        double base = 0.0, emin = 0.0, emag = 0.0;
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            size_t nh = hull_of(x, i, h);
            base += cost_of(x, h[0], 0);
            emin += p->error[h[nh - 1]];
            emag += fabs(p->error[h[nh - 1]]);
        }
        x->part[c * st] = base;
        x->part[c * st + 1] = emin;
        x->part[c * st + 2] = emag;
    }
    double base = 0.0, emin = 0.0, emag = 0.0;
    for (size_t c = 0; c < x->n_chunks; c++) {
        base += x->part[c * st];
        emin += x->part[c * st + 1];
        emag += x->part[c * st + 2];
    }
    double bound = emin - margin(x->n, emag);
    double C = p->capacity[0];
    double R = C - base;
    if (R < 0)
        R = 0; /* the exact precheck passed: rounding only */

    cut ct;
    int all_fit = 0;
    int rc = select_cut(x, R, &ct, &all_fit);
    if (rc) {
        free(hbuf);
        return bp_error_set(err, rc, "lagrange: out of memory selecting the multiplier");
    }
    /* The Lagrangian assignment: each item climbs its hull while the
     * increments come before the cut. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < x->n_chunks; c++) {
        uint32_t *h = hbuf + (size_t)omp_get_thread_num() * maxh;
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            size_t nh = hull_of(x, i, h), t = 0;
            if (all_fit)
                t = nh - 1;
            else
                for (; t + 1 < nh; t++) {
                    double e0 = p->error[h[t]], w0 = cost_of(x, h[t], 0);
                    double e1 = p->error[h[t + 1]], w1 = cost_of(x, h[t + 1], 0);
                    if (!taken(key_of(bp__slope(e0, w0, e1, w1)), i, t, &ct))
                        break;
                }
            s->choice[i] = (int32_t)(h[t] - p->item_start[i]);
        }
    }
    free(hbuf);
    if (all_fit) {
        rc = bp_solution_evaluate(p, s, err);
        if (rc)
            return rc;
        if (s->cost_total[0] <= C) {
            /* Every item at its most accurate choice: optimal. */
            s->bound = s->objective;
            set_gap(s);
            return BP_OK;
        }
    } else {
        double lam = slope_of_key(ct.key);
        if (isfinite(lam) && lam > 0 && isfinite(lam * C)) {
            double S, mag;
            dual_sum_hull(x, lam, &S, &mag);
            double L = S - lam * C - margin(x->n, mag + lam * fabs(C));
            if (isfinite(L) && L > bound)
                bound = L;
        }
    }
    rc = finish(x, s, o->improve_rounds);
    if (rc == BP_ENOMEM)
        return bp_error_set(err, rc, "lagrange: out of memory in repair");
    if (rc)
        return bp_error_set(err, BP_ESOLVER, "lagrange: repair failed to meet the capacity");
    s->bound = bound;
    set_gap(s);
    return BP_OK;
}

/* ---- several constraints ---- */

typedef struct dual_eval {
    double L;      /* dual value minus the rounding margin: a valid bound */
    double g[BP_MAX_CONSTRAINTS]; /* (total cost - capacity) / scale */
} dual_eval;

/* L(lam) with lam_j = mu_j / scale_j; writes the minimizer when choice is
 * not NULL. Ties: first kept choice (index order). */
static void dual_multi(ctx *x, const double *mu, int32_t *choice, dual_eval *d)
{
    size_t m = x->m, st = 2 + m;
    double lam[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < m; j++)
        lam[j] = mu[j] / x->scale[j];
#pragma omp parallel for schedule(dynamic, 1) num_threads(x->nt) if (x->n_chunks > 1)
    for (size_t c = 0; c < x->n_chunks; c++) {
        double s = 0.0, a = 0.0, W[BP_MAX_CONSTRAINTS] = {0};
        for (size_t i = chunk_lo(c); i < chunk_hi(x, c); i++) {
            double best = INFINITY, bmag = 0.0;
            size_t bk = 0;
            for (uint32_t t = x->mn.start[i]; t < x->mn.start[i + 1]; t++) {
                size_t k = x->mn.idx[t];
                const double *w = x->p->cost + k * m;
                double v = x->p->error[k], mg = fabs(v);
                for (size_t j = 0; j < m; j++) {
                    v += lam[j] * w[j];
                    mg += lam[j] * w[j];
                }
                if (v < best) {
                    best = v;
                    bmag = mg;
                    bk = k;
                }
            }
            s += best;
            a += bmag;
            for (size_t j = 0; j < m; j++)
                W[j] += x->p->cost[bk * m + j];
            if (choice)
                choice[i] = (int32_t)(bk - x->p->item_start[i]);
        }
        x->part[c * st] = s;
        x->part[c * st + 1] = a;
        for (size_t j = 0; j < m; j++)
            x->part[c * st + 2 + j] = W[j];
    }
    double s = 0.0, a = 0.0, W[BP_MAX_CONSTRAINTS] = {0};
    for (size_t c = 0; c < x->n_chunks; c++) {
        s += x->part[c * st];
        a += x->part[c * st + 1];
        for (size_t j = 0; j < m; j++)
            W[j] += x->part[c * st + 2 + j];
    }
    double lc = 0.0, lcmag = 0.0;
    for (size_t j = 0; j < m; j++) {
        lc += lam[j] * x->p->capacity[j];
        lcmag += lam[j] * fabs(x->p->capacity[j]);
        d->g[j] = (W[j] - x->p->capacity[j]) / x->scale[j];
    }
    d->L = s - lc - margin(x->n + m, a + lcmag);
    if (!isfinite(d->L))
        d->L = -INFINITY;
}

typedef struct dual_state {
    ctx *x;
    double mu[BP_MAX_CONSTRAINTS];      /* current */
    double best_mu[BP_MAX_CONSTRAINTS];
    double best_L;
    long evals;
} dual_state;

static void eval_at(dual_state *ds, const double *mu, dual_eval *d)
{
    dual_multi(ds->x, mu, NULL, d);
    ds->evals++;
    if (d->L > ds->best_L) {
        ds->best_L = d->L;
        memcpy(ds->best_mu, mu, sizeof ds->best_mu);
    }
}

/* Maximize L along mu_j (concave, piecewise linear): bisection on the sign
 * of the subgradient component g_j, which is non-increasing in mu_j. */
static void coord_ascent(dual_state *ds, size_t j, double base)
{
    double mu[BP_MAX_CONSTRAINTS];
    memcpy(mu, ds->mu, sizeof mu);
    dual_eval d;
    eval_at(ds, mu, &d);
    double lo, hi;
    if (d.g[j] > 0) {
        lo = mu[j];
        double step = fmax(mu[j], base);
        int k;
        for (k = 0; k < 400; k++) {
            mu[j] = lo + step;
            eval_at(ds, mu, &d);
            if (!(d.g[j] > 0))
                break;
            lo = mu[j];
            step *= 2;
            if (!isfinite(step))
                break;
        }
        if (k == 400 || !isfinite(step)) {
            memcpy(ds->mu, ds->best_mu, sizeof mu);
            return;
        }
        hi = mu[j];
    } else if (mu[j] > 0) {
        hi = mu[j];
        mu[j] = 0;
        eval_at(ds, mu, &d);
        if (!(d.g[j] > 0)) {
            ds->mu[j] = 0;
            return;
        }
        lo = 0;
    } else {
        return;
    }
    double L_lo = -INFINITY, L_hi = -INFINITY;
    for (int it = 0; it < 60 && hi - lo > 1e-9 * hi; it++) {
        mu[j] = 0.5 * (lo + hi);
        eval_at(ds, mu, &d);
        if (d.g[j] > 0) {
            lo = mu[j];
            L_lo = d.L;
        } else {
            hi = mu[j];
            L_hi = d.L;
        }
    }
    ds->mu[j] = L_lo > L_hi ? lo : hi;
}

static int primal_at(ctx *x, const double *mu, bp_solution *s, int improve_rounds)
{
    dual_eval d;
    dual_multi(x, mu, s->choice, &d);
    return finish(x, s, improve_rounds);
}

static int solve_multi(ctx *x, const bp_lagrange_options *o, bp_solution *s, bp_error *err)
{
    const bp_problem *p = x->p;
    size_t m = x->m, n = x->n;
    int rc = BP_OK;
    bp_solution cand = {0};
    rc = bp_solution_init(&cand, n, err);
    if (rc)
        return rc;
    /* Upper limit of any feasible objective (every item at its worst
     * choice) and the error range: scales for the search. */
    double emax = 0.0, erange = 0.0;
    for (size_t i = 0; i < n; i++) {
        double hi = -INFINITY, lo = INFINITY;
        for (size_t k = p->item_start[i]; k < p->item_start[i + 1]; k++) {
            hi = fmax(hi, p->error[k]);
            lo = fmin(lo, p->error[k]);
        }
        emax += hi;
        erange += hi - lo;
    }
    double emax_hi = emax + margin(n, fabs(emax)) + fmax(1e-12 * fabs(emax), 1e-300);
    dual_state ds = {.x = x, .best_L = -INFINITY};
    dual_eval d;
    /* mu = 0: the most accurate assignment; optimal if it fits. */
    eval_at(&ds, ds.mu, &d);
    dual_multi(x, ds.mu, s->choice, &d);
    rc = bp_solution_evaluate(p, s, err);
    if (rc)
        goto out;
    if (feasible(x, s->cost_total, p->capacity)) {
        s->bound = s->objective;
        set_gap(s);
        goto out;
    }
    double base = fmax(erange, 1e-300) * 1e-9;
    int have_ub = 0;
    double ub = INFINITY;
    int sweeps = o->coord_sweeps;
    for (int sw = 0; sw < sweeps; sw++) {
        double before = ds.best_L;
        for (size_t j = 0; j < m; j++)
            coord_ascent(&ds, j, base);
        if (ds.best_L > emax_hi)
            break;
        if (sw > 0 && !(ds.best_L > before + 1e-12 * fabs(before)))
            break;
    }
    /* First primal from the best multipliers so far. */
    int prc = primal_at(x, ds.best_mu, &cand, o->improve_rounds);
    if (prc == BP_ENOMEM) {
        rc = bp_error_set(err, prc, "lagrange: out of memory in repair");
        goto out;
    }
    if (!prc) {
        have_ub = 1;
        ub = cand.objective;
        memcpy(s->choice, cand.choice, n * sizeof *s->choice);
    }
    /* Projected subgradient, Polyak step towards the best objective (or,
     * without one, past the largest feasible objective, which drives the
     * bound up on infeasible problems). */
    double theta = 1.0;
    int stall = 0;
    double last_primal_L = ds.best_L;
    memcpy(ds.mu, ds.best_mu, sizeof ds.mu);
    for (int it = 0; it < o->max_iterations && ds.best_L <= emax_hi; it++) {
        double prev_best = ds.best_L;
        eval_at(&ds, ds.mu, &d);
        double gg = 0.0, g[BP_MAX_CONSTRAINTS];
        for (size_t j = 0; j < m; j++) {
            g[j] = (ds.mu[j] <= 0 && d.g[j] < 0) ? 0.0 : d.g[j];
            gg += g[j] * g[j];
        }
        if (!(gg > 0))
            break;
        double target = have_ub ? ub : emax_hi + 0.05 * fmax(fabs(emax_hi), fabs(d.L));
        if (have_ub && !(ub - ds.best_L > 1e-12 * fabs(ub)))
            break;
        double step = theta * (target - d.L) / gg;
        if (!(step > 0) || !isfinite(step))
            break;
        for (size_t j = 0; j < m; j++)
            ds.mu[j] = fmax(0.0, ds.mu[j] + step * g[j]);
        if (ds.best_L > prev_best)
            stall = 0;
        else if (++stall >= 8) {
            theta *= 0.5;
            stall = 0;
        }
        if (theta < 1e-6)
            break;
        /* Periodically turn the best multipliers into a primal. */
        if ((it + 1) % 25 == 0 && ds.best_L > last_primal_L) {
            last_primal_L = ds.best_L;
            prc = primal_at(x, ds.best_mu, &cand, o->improve_rounds);
            if (prc == BP_ENOMEM) {
                rc = bp_error_set(err, prc, "lagrange: out of memory in repair");
                goto out;
            }
            if (!prc && (!have_ub || cand.objective < ub)) {
                have_ub = 1;
                ub = cand.objective;
                memcpy(s->choice, cand.choice, n * sizeof *s->choice);
            }
        }
    }
    if (ds.best_L > emax_hi) {
        bp_solution_free(&cand);
        for (size_t i = 0; i < n; i++)
            s->choice[i] = -1;
        s->status = BP_SOLVE_INFEASIBLE;
        return bp__search_joint_infeasible(p, "(the Lagrangian bound exceeds every assignment's error)",
                                           err);
    }
    if (ds.best_L > last_primal_L) {
        prc = primal_at(x, ds.best_mu, &cand, o->improve_rounds);
        if (prc == BP_ENOMEM) {
            rc = bp_error_set(err, prc, "lagrange: out of memory in repair");
            goto out;
        }
        if (!prc && (!have_ub || cand.objective < ub)) {
            have_ub = 1;
            ub = cand.objective;
            memcpy(s->choice, cand.choice, n * sizeof *s->choice);
        }
    }
    if (!have_ub) {
        for (size_t i = 0; i < n; i++)
            s->choice[i] = -1;
        s->status = BP_SOLVE_NO_SOLUTION;
        rc = bp_error_set(err, BP_ESOLVER,
                          "lagrange: repair found no assignment meeting all %zu constraints and "
                          "infeasibility is not proven (best bound %.17g); try bp_solve_ilp",
                          m, ds.best_L);
        goto out;
    }
    rc = bp_solution_evaluate(p, s, err);
    if (rc)
        goto out;
    s->bound = ds.best_L;
    set_gap(s);
out:
    bp_solution_free(&cand);
    return rc;
}

int bp_solve_lagrange(const bp_problem *p, const bp_lagrange_options *o, bp_solution *s,
                      bp_error *err)
{
    double t0 = bp__search_now();
    bp_lagrange_options def;
    if (!o) {
        bp_lagrange_options_default(&def);
        o = &def;
    }
    bp_lagrange_options opt = *o;
    if (opt.max_iterations <= 0)
        opt.max_iterations = 200;
    if (opt.coord_sweeps < 0)
        opt.coord_sweeps = 3;
    if (opt.improve_rounds < 0)
        opt.improve_rounds = 16;
    if (!s)
        return bp_error_set(err, BP_EINVAL, "lagrange: solution is NULL");
    int rc = bp_problem_validate(p, err);
    if (rc)
        return rc;
    if (s->choice && s->n_items != p->n_items) {
        bp_solution_free(s);
    }
    if (!s->choice) {
        rc = bp_solution_init(s, p->n_items, err);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < p->n_items; i++)
        s->choice[i] = -1;
    s->status = BP_SOLVE_NO_SOLUTION;
    s->objective = s->bound = s->gap = 0.0;
    memset(s->cost_total, 0, sizeof s->cost_total);
    snprintf(s->solver, sizeof s->solver, "lagrange");
    rc = bp__search_precheck(p, err);
    if (rc) {
        s->status = BP_SOLVE_INFEASIBLE;
        s->seconds = bp__search_now() - t0;
        return rc;
    }
    ctx x = {.p = p, .n = p->n_items, .m = p->n_constraints};
    x.nt = opt.threads > 0 ? opt.threads : omp_get_max_threads();
    x.n_chunks = (x.n + BP__SEARCH_CHUNK - 1) / BP__SEARCH_CHUNK;
    for (size_t j = 0; j < x.m; j++) {
        double sc = p->capacity[j];
        if (!(sc > 0)) {
            sc = 0.0;
            for (size_t k = 0; k < p->n_choices; k++)
                sc = fmax(sc, p->cost[k * x.m + j]);
        }
        x.scale[j] = sc > 0 ? sc : 1.0;
    }
    x.part = malloc(x.n_chunks * (4 + x.m) * sizeof *x.part);
    if (!x.part) {
        rc = bp_error_set(err, BP_ENOMEM, "lagrange: out of memory");
        goto out;
    }
    rc = bp__menu_build(p, x.nt, &x.mn, err);
    if (rc)
        goto out;
    rc = x.m == 1 ? solve_one(&x, &opt, s, err) : solve_multi(&x, &opt, s, err);
out:
    if (rc && rc != BP_EINFEASIBLE) {
        for (size_t i = 0; i < p->n_items; i++)
            s->choice[i] = -1;
        s->status = BP_SOLVE_NO_SOLUTION;
        s->objective = s->bound = s->gap = 0.0;
        memset(s->cost_total, 0, sizeof s->cost_total);
    }
    if (rc == BP_EINFEASIBLE) {
        s->objective = s->bound = s->gap = 0.0;
        memset(s->cost_total, 0, sizeof s->cost_total);
    }
    bp__menu_free(&x.mn);
    free(x.part);
    s->seconds = bp__search_now() - t0;
    return rc;
}
