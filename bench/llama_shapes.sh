# Sourced by the bench scripts: the Llama-shaped BF16 checkpoints they generate with
# `qtool tiny-model`, by name. Sets DIMS (an array of tiny-model options) for SIZE:
#   small  hidden 2048, intermediate 8192, 16 layers, 32/8 heads, vocab 128256, 1 shard (~3 GB)
#   8b-8l  the Llama-3-8B widths with 8 of its 32 layers, 2 shards (5.6 GB)
#   8b     Llama-3-8B shapes, 32 layers, 4 shards (16 GB)
llama_shape_dims() {
  case "$1" in
    small) DIMS=(--hidden 2048 --intermediate 8192 --layers 16 --heads 32 --kv-heads 8 --vocab 128256 --shards 1) ;;
    8b-8l) DIMS=(--hidden 4096 --intermediate 14336 --layers 8 --heads 32 --kv-heads 8 --vocab 128256 --shards 2) ;;
    8b) DIMS=(--hidden 4096 --intermediate 14336 --layers 32 --heads 32 --kv-heads 8 --vocab 128256 --shards 4) ;;
    *) echo "unknown size '$1' (small, 8b-8l, 8b)" >&2; return 2 ;;
  esac
}
