pub mod attention;
pub mod autoencoder_kl;
pub mod autoencoder_tiny;
pub mod clip_text_model;
pub mod nn;
pub mod resnet;
pub mod row_bands;
pub mod unet_2d_condition;
