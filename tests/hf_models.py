"""Tiny random transformers model directories, one per FIM template family, built with that
family's special tokens (nothing is downloaded)."""
import torch

FAMILIES = {
    # family: (special tokens, bos, eos)
    "starcoder": (["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>", "<file_sep>"],
                  "<|endoftext|>", "<|endoftext|>"),
    "santacoder": (["<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"], "<|endoftext|>", "<|endoftext|>"),
    "deepseek": (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], "<｜begin▁of▁sentence｜>",
                 "<｜end▁of▁sentence｜>"),
    "qwen": (["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>"], None,
             "<|endoftext|>"),
    "codellama": (["<PRE>", "<SUF>", "<MID>", "<EOT>"], "<s>", "</s>"),
    "incoder": (["<|mask:0|>", "<|mask:1|>", "<|endofmask|>"], "<|endoftext|>", "<|endoftext|>"),
}
TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n", "x = [1, 2, 3]\n"] * 5


def build(directory, family, seed=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    extra, bos, eos = FAMILIES[family]
    specials = [t for t in dict.fromkeys([eos, bos, *extra]) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                     additional_special_tokens=extra)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    hf_tok.save_pretrained(directory)
    return directory
