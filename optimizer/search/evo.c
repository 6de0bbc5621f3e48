/* (1+lambda) evolutionary search on a measured fitness, ask/tell. The
 * algorithm and its defaults are described in docs/search.md ("Real-loss
 * evolutionary search"). */
#include "bitplan/evo.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum evo_state { ST_SEED_LOW, ST_SEED_HIGH, ST_GEN_LOW, ST_GEN_HIGH, ST_DONE };

typedef struct evo_rng {
    uint64_t s[4];
} evo_rng;

struct bp_evo {
    const bp_problem *p;
    bp_evo_options o;
    size_t n, m;
    /* Per item, its non-dominated choices (local indices) sorted by
     * (cost 0, error, index): the rungs a budget move climbs. */
    size_t *lad_start;
    int32_t *lad;
    int32_t *parent;
    double parent_low, parent_high, seed_low, seed_high;
    /* Every candidate ever asked, for duplicate rejection. */
    int32_t *arch;
    size_t n_arch, cap_arch;
    size_t *slots;          /* open addressing: archive index + 1, 0 = empty */
    size_t n_slots;
    /* The pending batch. */
    int32_t *batch;         /* lambda * n: offspring, or the seed */
    size_t batch_n;
    int pending;
    int32_t *promo;         /* promote * n: offspring going to high fidelity */
    double *promo_low;
    size_t promo_n;
    unsigned char *taken;   /* scratch: offspring already promoted */
    /* Scratch for mutations. */
    double totals[BP_MAX_CONSTRAINTS];
    size_t *pool;
    enum evo_state st;
    evo_rng rng;
    double *history;
    size_t n_history;
    bp_evo_stats stats;
};

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(evo_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(evo_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform enough in [0, n) for n far below 2^53 (the bias is < 2^-40). */
static size_t rng_below(evo_rng *r, size_t n)
{
    return (size_t)((rng_next(r) >> 11) % (uint64_t)n);
}

/* ---- options ---- */

void bp_evo_options_default(bp_evo_options *o)
{
    memset(o, 0, sizeof *o);
    o->lambda = 8;
    o->generations = 20;
    o->promote = 2;
    o->seed = 1;
    o->min_moves = 1;
    o->max_moves = 2;
    o->max_tries = 64;
    o->tournament = 4;
}

static int check_options(const bp_evo_options *o, bp_error *err)
{
    if (o->lambda < 1 || o->lambda > 4096)
        return bp_error_set(err, BP_EINVAL, "evo: lambda %zu is outside 1..4096", o->lambda);
    if (o->generations > 100000)
        return bp_error_set(err, BP_EINVAL, "evo: generations %zu is above 100000", o->generations);
    if (o->promote < 1 || o->promote > o->lambda)
        return bp_error_set(err, BP_EINVAL, "evo: promote %zu is outside 1..lambda (%zu)", o->promote,
                            o->lambda);
    if (o->min_moves < 1 || o->max_moves > 64 || o->min_moves > o->max_moves)
        return bp_error_set(err, BP_EINVAL, "evo: moves per offspring %u..%u must lie within 1..64",
                            o->min_moves, o->max_moves);
    if (o->max_tries < 1 || o->max_tries > 100000)
        return bp_error_set(err, BP_EINVAL, "evo: max_tries %u is outside 1..100000", o->max_tries);
    if (o->tournament < 1 || o->tournament > 64)
        return bp_error_set(err, BP_EINVAL, "evo: tournament %u is outside 1..64", o->tournament);
    return BP_OK;
}

/* ---- choices and ladders ---- */

static const double *cost_of(const bp_evo *e, size_t item, int32_t c)
{
    return e->p->cost + (e->p->item_start[item] + (size_t)c) * e->m;
}

static double error_of(const bp_evo *e, size_t item, int32_t c)
{
    return e->p->error[e->p->item_start[item] + (size_t)c];
}

/* The ladder order: cost 0, then error, then index (a total order). */
static int key_before(const bp_evo *e, size_t item, int32_t a, int32_t b)
{
    double ca = cost_of(e, item, a)[0], cb = cost_of(e, item, b)[0];
    if (ca != cb)
        return ca < cb;
    double ea = error_of(e, item, a), eb = error_of(e, item, b);
    if (ea != eb)
        return ea < eb;
    return a < b;
}

/* y dominates x: no worse in error and every cost, better in one of them;
 * among identical choices the lower index wins. */
static int dominates(const bp_evo *e, size_t item, int32_t y, int32_t x)
{
    if (error_of(e, item, y) > error_of(e, item, x))
        return 0;
    int strict = error_of(e, item, y) < error_of(e, item, x);
    const double *cy = cost_of(e, item, y), *cx = cost_of(e, item, x);
    for (size_t j = 0; j < e->m; j++) {
        if (cy[j] > cx[j])
            return 0;
        if (cy[j] < cx[j])
            strict = 1;
    }
    return strict || y < x;
}

static int build_ladders(bp_evo *e, bp_error *err)
{
    const bp_problem *p = e->p;
    e->lad_start = malloc((e->n + 1) * sizeof *e->lad_start);
    e->lad = malloc(p->n_choices * sizeof *e->lad);
    if (!e->lad_start || !e->lad)
        return bp_error_set(err, BP_ENOMEM, "evo: out of memory for the choice ladders");
    size_t at = 0;
    for (size_t i = 0; i < e->n; i++) {
        e->lad_start[i] = at;
        int32_t k = (int32_t)(p->item_start[i + 1] - p->item_start[i]);
        for (int32_t x = 0; x < k; x++) {
            int dominated = 0;
            for (int32_t y = 0; y < k && !dominated; y++)
                dominated = y != x && dominates(e, i, y, x);
            if (dominated)
                continue;
            /* insertion into the sorted ladder: ladders are short */
            size_t pos = at;
            while (pos > e->lad_start[i] && key_before(e, i, x, e->lad[pos - 1])) {
                e->lad[pos] = e->lad[pos - 1];
                pos--;
            }
            e->lad[pos] = x;
            at++;
        }
    }
    e->lad_start[e->n] = at;
    return BP_OK;
}

/* The next rung above (dir > 0) or below (dir < 0) choice c of item, or -1.
 * c itself need not be on the ladder (a dominated seed choice). */
static int32_t ladder_step(const bp_evo *e, size_t item, int32_t c, int dir)
{
    size_t a = e->lad_start[item], b = e->lad_start[item + 1];
    if (dir > 0) {
        for (size_t k = a; k < b; k++)
            if (key_before(e, item, c, e->lad[k]))
                return e->lad[k];
        return -1;
    }
    for (size_t k = b; k > a; k--)
        if (key_before(e, item, e->lad[k - 1], c))
            return e->lad[k - 1];
    return -1;
}

/* Constraint totals of an assignment, summed in item order from 0.0 like
 * bp_solution_evaluate; the index of the first violated constraint, or -1. */
static long exact_totals(const bp_evo *e, const int32_t *x, double *totals)
{
    for (size_t j = 0; j < e->m; j++)
        totals[j] = 0.0;
    for (size_t i = 0; i < e->n; i++) {
        const double *c = cost_of(e, i, x[i]);
        for (size_t j = 0; j < e->m; j++)
            totals[j] += c[j];
    }
    for (size_t j = 0; j < e->m; j++)
        if (totals[j] > e->p->capacity[j])
            return (long)j;
    return -1;
}

/* ---- archive of asked candidates ---- */

static uint64_t hash_choice(const int32_t *x, size_t n)
{
    uint64_t h = 0x243f6a8885a308d3ull ^ (uint64_t)n;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint32_t)x[i];
        h = splitmix64(&h);
    }
    return h;
}

static int archive_has(const bp_evo *e, const int32_t *x)
{
    size_t mask = e->n_slots - 1;
    for (size_t s = hash_choice(x, e->n) & mask; e->slots[s]; s = (s + 1) & mask)
        if (!memcmp(e->arch + (e->slots[s] - 1) * e->n, x, e->n * sizeof *x))
            return 1;
    return 0;
}

static void slot_insert(bp_evo *e, size_t idx)
{
    size_t mask = e->n_slots - 1;
    size_t s = hash_choice(e->arch + idx * e->n, e->n) & mask;
    while (e->slots[s])
        s = (s + 1) & mask;
    e->slots[s] = idx + 1;
}

static int archive_add(bp_evo *e, const int32_t *x, bp_error *err)
{
    if (e->n_arch == e->cap_arch) {
        size_t cap = e->cap_arch ? 2 * e->cap_arch : 64;
        int32_t *a = realloc(e->arch, cap * e->n * sizeof *a);
        if (!a)
            return bp_error_set(err, BP_ENOMEM, "evo: out of memory for %zu evaluated candidates", cap);
        e->arch = a;
        e->cap_arch = cap;
    }
    /* Keep the table at most half full. */
    if (2 * (e->n_arch + 1) > e->n_slots) {
        size_t ns = e->n_slots ? 2 * e->n_slots : 256;
        size_t *t = calloc(ns, sizeof *t);
        if (!t)
            return bp_error_set(err, BP_ENOMEM, "evo: out of memory for the candidate table");
        free(e->slots);
        e->slots = t;
        e->n_slots = ns;
        for (size_t k = 0; k < e->n_arch; k++)
            slot_insert(e, k);
    }
    memcpy(e->arch + e->n_arch * e->n, x, e->n * sizeof *x);
    slot_insert(e, e->n_arch++);
    return BP_OK;
}

/* ---- mutation ---- */

/* Error saved per unit of cost 0 spent (higher is better). Zero-cost steps
 * (possible with several constraints) divide by DBL_MIN: a free gain ranks
 * first, a free loss last. */
static double up_score(const bp_evo *e, size_t i, int32_t from, int32_t to)
{
    double dw = cost_of(e, i, to)[0] - cost_of(e, i, from)[0];
    return (error_of(e, i, from) - error_of(e, i, to)) / (dw > 0 ? dw : DBL_MIN);
}

/* Error added per unit of cost 0 saved (lower is better). */
static double down_score(const bp_evo *e, size_t i, int32_t from, int32_t to)
{
    double dw = cost_of(e, i, from)[0] - cost_of(e, i, to)[0];
    return (error_of(e, i, to) - error_of(e, i, from)) / (dw > 0 ? dw : DBL_MIN);
}

static int fits(const bp_evo *e, const double *d1, const double *d2)
{
    for (size_t j = 0; j < e->m; j++)
        if (e->totals[j] + d1[j] + (d2 ? d2[j] : 0.0) > e->p->capacity[j])
            return 0;
    return 1;
}

/* One drawn budget move from x: an up-step of a random item paid for by a
 * down-step of another (binary tournaments on the proxy pick both), or the
 * up-step alone when it fits (half the time). *delta is the move's change
 * of the proxy error. Returns 0 when no move exists from x. */
static int draw_move(bp_evo *e, const int32_t *x, size_t *u_out, int32_t *cu_out, long *d_out, int32_t *cd_out,
                     double *delta)
{
    size_t n_up = 0;
    for (size_t i = 0; i < e->n; i++)
        if (ladder_step(e, i, x[i], +1) >= 0)
            e->pool[n_up++] = i;
    if (n_up == 0)
        return 0;
    size_t u = e->pool[rng_below(&e->rng, n_up)], u2 = e->pool[rng_below(&e->rng, n_up)];
    int32_t cu = ladder_step(e, u, x[u], +1), cu2 = ladder_step(e, u2, x[u2], +1);
    if (up_score(e, u2, x[u2], cu2) > up_score(e, u, x[u], cu)) {
        u = u2;
        cu = cu2;
    }
    double dup[BP_MAX_CONSTRAINTS], ddown[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < e->m; j++)
        dup[j] = cost_of(e, u, cu)[j] - cost_of(e, u, x[u])[j];
    double gain = error_of(e, u, cu) - error_of(e, u, x[u]);
    int alone = fits(e, dup, NULL);
    *u_out = u;
    *cu_out = cu;
    *d_out = -1;
    *cd_out = -1;
    *delta = gain;
    if (alone && (rng_next(&e->rng) >> 63))
        return 1;
    size_t n_down = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (i == u)
            continue;
        int32_t cd = ladder_step(e, i, x[i], -1);
        if (cd < 0)
            continue;
        for (size_t j = 0; j < e->m; j++)
            ddown[j] = cost_of(e, i, cd)[j] - cost_of(e, i, x[i])[j];
        if (fits(e, dup, ddown))
            e->pool[n_down++] = i;
    }
    if (n_down == 0)
        return alone;
    size_t d = e->pool[rng_below(&e->rng, n_down)], d2 = e->pool[rng_below(&e->rng, n_down)];
    int32_t cd = ladder_step(e, d, x[d], -1), cd2 = ladder_step(e, d2, x[d2], -1);
    if (down_score(e, d2, x[d2], cd2) < down_score(e, d, x[d], cd)) {
        d = d2;
        cd = cd2;
    }
    *d_out = (long)d;
    *cd_out = cd;
    *delta = gain + error_of(e, d, cd) - error_of(e, d, x[d]);
    return 1;
}

/* One budget move on x (e->totals tracks its totals): of `tournament`
 * drawn moves, the one with the smallest change of the proxy error (the
 * first on ties). Returns 0 when no move exists from x. */
static int mutate_once(bp_evo *e, int32_t *x)
{
    size_t bu = 0;
    int32_t bcu = -1, bcd = -1;
    long bd = -1;
    double best = 0.0;
    int found = 0;
    for (unsigned t = 0; t < e->o.tournament; t++) {
        size_t u;
        int32_t cu, cd;
        long d;
        double delta;
        if (!draw_move(e, x, &u, &cu, &d, &cd, &delta))
            break;
        if (!found || delta < best) {
            found = 1;
            best = delta;
            bu = u;
            bcu = cu;
            bd = d;
            bcd = cd;
        }
    }
    if (!found)
        return 0;
    for (size_t j = 0; j < e->m; j++) {
        e->totals[j] += cost_of(e, bu, bcu)[j] - cost_of(e, bu, x[bu])[j];
        if (bd >= 0)
            e->totals[j] += cost_of(e, (size_t)bd, bcd)[j] - cost_of(e, (size_t)bd, x[bd])[j];
    }
    x[bu] = bcu;
    if (bd >= 0)
        x[bd] = bcd;
    return 1;
}

/* One new offspring of the parent into x: feasible (exact totals), never
 * asked before. 0 when max_tries attempts all failed. */
static int make_offspring(bp_evo *e, int32_t *x)
{
    unsigned span = e->o.max_moves - e->o.min_moves + 1;
    for (unsigned t = 0; t < e->o.max_tries; t++) {
        memcpy(x, e->parent, e->n * sizeof *x);
        exact_totals(e, x, e->totals);
        unsigned moves = e->o.min_moves + (unsigned)rng_below(&e->rng, span), done = 0;
        while (done < moves && mutate_once(e, x))
            done++;
        if (done == 0)
            continue;
        double exact[BP_MAX_CONSTRAINTS];
        if (exact_totals(e, x, exact) >= 0 || archive_has(e, x))
            continue;
        return 1;
    }
    return 0;
}

/* ---- lifecycle ---- */

void bp_evo_destroy(bp_evo **ep)
{
    if (!ep || !*ep)
        return;
    bp_evo *e = *ep;
    free(e->lad_start);
    free(e->lad);
    free(e->parent);
    free(e->arch);
    free(e->slots);
    free(e->batch);
    free(e->promo);
    free(e->promo_low);
    free(e->taken);
    free(e->pool);
    free(e->history);
    free(e);
    *ep = NULL;
}

static int check_seed(const bp_evo *e, const int32_t *seed, bp_error *err)
{
    for (size_t i = 0; i < e->n; i++) {
        size_t k = e->p->item_start[i + 1] - e->p->item_start[i];
        if (seed[i] < 0 || (size_t)seed[i] >= k)
            return bp_error_set(err, BP_EINVAL, "evo: seed choice %d of item %zu ('%s') is outside 0..%zu",
                                (int)seed[i], i, e->p->item_name[i], k - 1);
    }
    double totals[BP_MAX_CONSTRAINTS];
    long bad = exact_totals(e, seed, totals);
    if (bad >= 0)
        return bp_error_set(err, BP_EINVAL, "evo: the seed is infeasible: constraint '%s' total %.17g exceeds "
                            "its capacity %.17g", e->p->constraint_name[bad], totals[bad],
                            e->p->capacity[bad]);
    return BP_OK;
}

int bp_evo_new(const bp_problem *p, const int32_t *seed_choice, const bp_evo_options *o, bp_evo **out,
               bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "evo: NULL output");
    *out = NULL;
    if (!p || !seed_choice)
        return bp_error_set(err, BP_EINVAL, "evo: NULL problem or seed");
    int rc = bp_problem_validate(p, err);
    if (rc != BP_OK) {
        bp_error_prefix(err, "evo");
        return rc;
    }
    bp_evo_options def;
    bp_evo_options_default(&def);
    if ((rc = check_options(o ? o : &def, err)) != BP_OK)
        return rc;
    bp_evo *e = calloc(1, sizeof *e);
    if (!e)
        return bp_error_set(err, BP_ENOMEM, "evo: out of memory");
    e->p = p;
    e->o = o ? *o : def;
    e->n = p->n_items;
    e->m = p->n_constraints;
    if ((rc = check_seed(e, seed_choice, err)) != BP_OK)
        goto fail;
    size_t n = e->n;
    e->parent = malloc(n * sizeof *e->parent);
    e->batch = malloc(e->o.lambda * n * sizeof *e->batch);
    e->promo = malloc(e->o.promote * n * sizeof *e->promo);
    e->promo_low = malloc(e->o.promote * sizeof *e->promo_low);
    e->taken = malloc(e->o.lambda);
    e->pool = malloc(n * sizeof *e->pool);
    e->history = malloc((e->o.generations + 1) * sizeof *e->history);
    if (!e->parent || !e->batch || !e->promo || !e->promo_low || !e->taken || !e->pool ||
        !e->history) {
        rc = bp_error_set(err, BP_ENOMEM, "evo: out of memory for %zu items", n);
        goto fail;
    }
    if ((rc = build_ladders(e, err)) != BP_OK)
        goto fail;
    memcpy(e->parent, seed_choice, n * sizeof *e->parent);
    if ((rc = archive_add(e, e->parent, err)) != BP_OK)
        goto fail;
    rng_seed(&e->rng, e->o.seed);
    e->seed_low = e->seed_high = e->parent_low = e->parent_high = NAN;
    e->st = e->o.generations > 0 ? ST_SEED_LOW : ST_SEED_HIGH;
    *out = e;
    return BP_OK;
fail:
    bp_evo_destroy(&e);
    return rc;
}

/* ---- ask / tell ---- */

static void fill_batch(const bp_evo *e, bp_evo_batch *b)
{
    b->n = e->batch_n;
    b->n_items = e->n;
    b->choice = e->st == ST_GEN_HIGH ? e->promo : e->batch;
    b->fidelity = e->st == ST_SEED_HIGH || e->st == ST_GEN_HIGH ? BP_EVO_HIGH : BP_EVO_LOW;
    b->generation = e->st == ST_SEED_LOW || e->st == ST_SEED_HIGH ? 0 : e->stats.generations + 1;
}

int bp_evo_ask(bp_evo *e, bp_evo_batch *b, bp_error *err)
{
    if (!e || !b)
        return bp_error_set(err, BP_EINVAL, "evo ask: NULL argument");
    memset(b, 0, sizeof *b);
    if (e->pending) {
        fill_batch(e, b);
        return BP_OK;
    }
    switch (e->st) {
    case ST_SEED_LOW:
    case ST_SEED_HIGH:
        memcpy(e->batch, e->parent, e->n * sizeof *e->batch);
        e->batch_n = 1;
        break;
    case ST_GEN_LOW:
        e->batch_n = 0;
        for (size_t k = 0; k < e->o.lambda; k++) {
            int32_t *x = e->batch + e->batch_n * e->n;
            if (!make_offspring(e, x)) {
                e->stats.failed_offspring++;
                continue;
            }
            int rc = archive_add(e, x, err);
            if (rc != BP_OK)
                return rc;
            e->batch_n++;
        }
        if (e->batch_n == 0) {
            e->stats.stalled = 1;
            e->st = ST_DONE;
            b->n_items = e->n;
            return BP_OK;
        }
        break;
    case ST_GEN_HIGH:
        e->batch_n = e->promo_n;
        break;
    case ST_DONE:
        b->n_items = e->n;
        return BP_OK;
    }
    e->pending = 1;
    fill_batch(e, b);
    return BP_OK;
}

static void end_generation(bp_evo *e)
{
    e->stats.generations++;
    e->history[e->n_history++] = e->parent_high;
    e->st = e->stats.generations >= e->o.generations ? ST_DONE : ST_GEN_LOW;
}

/* The (at most promote) offspring whose low fitness beats the parent's,
 * best first (ties: lower batch index), copied to promo. */
static void select_promoted(bp_evo *e, const double *f)
{
    memset(e->taken, 0, e->batch_n);
    e->promo_n = 0;
    while (e->promo_n < e->o.promote) {
        size_t best = e->batch_n;
        for (size_t k = 0; k < e->batch_n; k++)
            if (!e->taken[k] && f[k] < e->parent_low && (best == e->batch_n || f[k] < f[best]))
                best = k;
        if (best == e->batch_n)
            break;
        e->taken[best] = 1;
        memcpy(e->promo + e->promo_n * e->n, e->batch + best * e->n, e->n * sizeof *e->promo);
        e->promo_low[e->promo_n++] = f[best];
    }
}

int bp_evo_tell(bp_evo *e, const double *fitness, size_t n, bp_error *err)
{
    if (!e)
        return bp_error_set(err, BP_EINVAL, "evo tell: NULL search");
    if (!e->pending)
        return bp_error_set(err, BP_EINVAL, "evo tell: no batch is pending (call bp_evo_ask first)");
    if (n != e->batch_n)
        return bp_error_set(err, BP_EINVAL, "evo tell: %zu fitness values for a batch of %zu candidates", n,
                            e->batch_n);
    if (!fitness)
        return bp_error_set(err, BP_EINVAL, "evo tell: NULL fitness");
    for (size_t k = 0; k < n; k++)
        if (!isfinite(fitness[k]))
            return bp_error_set(err, BP_EINVAL, "evo tell: fitness[%zu] = %g is not finite", k, fitness[k]);
    e->pending = 0;
    switch (e->st) {
    case ST_SEED_LOW:
        e->seed_low = e->parent_low = fitness[0];
        e->stats.evals_low++;
        e->st = ST_SEED_HIGH;
        break;
    case ST_SEED_HIGH:
        e->seed_high = e->parent_high = fitness[0];
        e->stats.evals_high++;
        e->history[e->n_history++] = e->parent_high;
        e->st = e->o.generations > 0 ? ST_GEN_LOW : ST_DONE;
        break;
    case ST_GEN_LOW:
        e->stats.evals_low += n;
        select_promoted(e, fitness);
        if (e->promo_n == 0)
            end_generation(e);
        else
            e->st = ST_GEN_HIGH;
        break;
    case ST_GEN_HIGH: {
        e->stats.evals_high += n;
        size_t best = 0;
        for (size_t k = 1; k < n; k++)
            if (fitness[k] < fitness[best])
                best = k;
        if (fitness[best] < e->parent_high) {
            memcpy(e->parent, e->promo + best * e->n, e->n * sizeof *e->parent);
            e->parent_high = fitness[best];
            e->parent_low = e->promo_low[best];
            e->stats.accepted++;
        }
        end_generation(e);
        break;
    }
    case ST_DONE:
        break;
    }
    return BP_OK;
}

int bp_evo_done(const bp_evo *e)
{
    return !e || e->st == ST_DONE;
}

int bp_evo_best(const bp_evo *e, const int32_t **choice, double *fitness_high)
{
    if (!e)
        return BP_EINVAL;
    if (choice)
        *choice = e->parent;
    if (fitness_high)
        *fitness_high = e->parent_high;
    return isnan(e->parent_high) ? BP_ENOTFOUND : BP_OK;
}

void bp_evo_get_stats(const bp_evo *e, bp_evo_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!e)
        return;
    *out = e->stats;
    out->seed_low = e->seed_low;
    out->seed_high = e->seed_high;
    out->parent_low = e->parent_low;
    out->parent_high = e->parent_high;
}

size_t bp_evo_history(const bp_evo *e, const double **best)
{
    if (best)
        *best = e ? e->history : NULL;
    return e ? e->n_history : 0;
}
