/* GGUF <-> Hugging Face Llama tensor names (table in bitplan/imatrix.h). */
#include <stdio.h>
#include <string.h>

#include "bitplan/imatrix.h"

static const struct {
    const char *gguf;
    const char *hf;
} layer_parts[] = {
    {"attn_q", "self_attn.q_proj"},     {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},     {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},      {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},      {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
};

static const struct {
    const char *gguf;
    const char *hf;
} top_parts[] = {
    {"output", "lm_head"},
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
};

#define N_LAYER (sizeof layer_parts / sizeof layer_parts[0])
#define N_TOP (sizeof top_parts / sizeof top_parts[0])

#define GGUF_BLK "blk."
#define HF_BLK "model.layers."

/* If s starts with part followed by '.' or the end, return what follows
 * part; else NULL. */
static const char *after_part(const char *s, const char *part)
{
    size_t n = strlen(part);
    if (strncmp(s, part, n) != 0 || (s[n] != '.' && s[n] != '\0'))
        return NULL;
    return s + n;
}

/* Digits of a layer number followed by '.', or 0. */
static size_t layer_digits(const char *s)
{
    size_t k = 0;
    while (s[k] >= '0' && s[k] <= '9' && k < 10)
        k++;
    return k > 0 && s[k] == '.' ? k : 0;
}

static int emit(char *out, size_t cap, const char *a, size_t alen, const char *b,
                const char *c, const char *d)
{
    int w = snprintf(out, cap, "%.*s%s%s%s", (int)alen, a, b, c, d);
    return w < 0 || (size_t)w >= cap ? BP_EINVAL : BP_OK;
}

/* from_blk/to_blk: layer prefixes; from/to select the table columns. */
static int convert(const char *name, char *out, size_t cap, int to_hf)
{
    if (!name || !out || cap == 0)
        return BP_EINVAL;
    const char *from_blk = to_hf ? GGUF_BLK : HF_BLK;
    const char *to_blk = to_hf ? HF_BLK : GGUF_BLK;
    size_t fl = strlen(from_blk);
    if (strncmp(name, from_blk, fl) == 0) {
        const char *num = name + fl;
        size_t nd = layer_digits(num);
        if (nd) {
            const char *rest = num + nd + 1;
            for (size_t i = 0; i < N_LAYER; i++) {
                const char *tail =
                    after_part(rest, to_hf ? layer_parts[i].gguf : layer_parts[i].hf);
                if (tail) {
                    char head[64];
                    snprintf(head, sizeof head, "%s%.*s.", to_blk, (int)nd, num);
                    return emit(out, cap, head, strlen(head),
                                to_hf ? layer_parts[i].hf : layer_parts[i].gguf, tail, "");
                }
            }
        }
    }
    for (size_t i = 0; i < N_TOP; i++) {
        const char *tail = after_part(name, to_hf ? top_parts[i].gguf : top_parts[i].hf);
        if (tail)
            return emit(out, cap, "", 0, to_hf ? top_parts[i].hf : top_parts[i].gguf, tail,
                        "");
    }
    return emit(out, cap, "", 0, name, "", "");
}

int bp_imatrix_name_to_hf(const char *name, char *out, size_t cap)
{
    return convert(name, out, cap, 1);
}

int bp_imatrix_name_to_gguf(const char *name, char *out, size_t cap)
{
    return convert(name, out, cap, 0);
}
