# Will it fit? The memory article's worked example, from R: keras_hub's Gemma
# causal LM at 4.7 billion parameters, laid out by Gemma's own layout map on
# 4 devices, asked of 4 H100s, 4 T4s and a v5e 2x2 TPU slice, with each
# optimizer. No weight is made. `make bench` runs it with the accelerator
# environment's Python and keeps what it printed
# (bench/results/will_it_fit_r.txt).

# Before Python starts: JAX, four host devices for Keras's device mesh, and
# JAX on this CPU (the accelerators are compiled for, not used).
Sys.setenv(KERAS_BACKEND = "jax", JAX_PLATFORMS = "cpu",
           XLA_FLAGS = "--xla_force_host_platform_device_count=4")
library(keras3)
library(adafactor)
keras_hub <- reticulate::import("keras_hub")

mesh <- keras$distribution$DeviceMesh(shape = c(1L, 4L), axis_names = c("batch", "model"))
keras$distribution$set_distribution(keras$distribution$ModelParallel(
  layout_map = keras_hub$models$GemmaBackbone$get_layout_map(mesh),
  batch_dim_name = "batch"))
with(keras$StatelessScope(initialize_variables = FALSE), {
  backbone <- keras_hub$models$GemmaBackbone(
    vocabulary_size = 256000L, num_layers = 3L, num_query_heads = 32L,
    num_key_value_heads = 32L, hidden_dim = 8192L, intermediate_dim = 49152L,
    head_dim = 256L)
})
model <- keras_hub$models$GemmaCausalLM(backbone = backbone, preprocessor = NULL)
model |> compile(optimizer = optimizer_adafactor(),
                 loss = "sparse_categorical_crossentropy")

tokens <- array(0L, c(4, 512)) # a batch: 4 sequences of 512 tokens
adafactor_memory(model,
                 batch = list(list(token_ids = tokens, padding_mask = tokens), tokens),
                 compiled_for = c("H100 x 4", "T4 x 4", "v5e 2x2"))
