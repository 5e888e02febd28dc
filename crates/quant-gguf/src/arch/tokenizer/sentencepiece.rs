//! SentencePiece `tokenizer.model` files (protobuf `sentencepiece_model.proto`) and the
//! `llama` vocabulary convert_hf_to_gguf.py builds from them (`_create_vocab_sentencepiece`).
//!
//! Only the fields the conversion reads are declared; prost skips the others.

use std::path::Path;

use prost::Message;
use quant_core::{Error, Result};

use super::TokenType;

/// `ModelProto` (only what the conversion reads).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The vocabulary, in id order.
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    /// Training parameters.
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    /// Normalization parameters.
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SentencePiece {
    /// The piece text.
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    /// Its score.
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// Its type (`NORMAL` = 1 when absent).
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `TrainerSpec` (only the model type).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
}

/// `NormalizerSpec` (only the flags llama.cpp-bound converters read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    /// Whether a space is prepended to the input.
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    /// Whether runs of whitespace are collapsed.
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
}

/// SentencePiece piece types (`sentencepiece_model.proto`), the same numbers as
/// llama.cpp's token types.
const NORMAL: i32 = 1;

/// Largest `tokenizer.model` read (real ones are a few MB).
const MAX_MODEL_BYTES: u64 = 1 << 30;

/// Parses `path` as a SentencePiece model.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_MODEL_BYTES {
        return Err(Error::file(
            path,
            "sentencepiece",
            format!("{len} bytes exceeds the cap of {MAX_MODEL_BYTES}"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::file(path, "sentencepiece", format!("not a model protobuf: {e}")))
}

/// Tokens, scores and token types as the reference builds them before added tokens:
/// `vocab_size` slots (`[PAD{i}]`, −10000, UNUSED), filled from the model's pieces.
pub fn base_vocab(
    model: &ModelProto,
    vocab_size: usize,
) -> (Vec<String>, Vec<f32>, Vec<TokenType>) {
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![TokenType::Unused; vocab_size];
    for (id, p) in model.pieces.iter().enumerate().take(vocab_size) {
        tokens[id] = p.piece.clone().unwrap_or_default();
        scores[id] = p.score.unwrap_or(0.0);
        types[id] = TokenType::from_piece_type(p.r#type.unwrap_or(NORMAL));
    }
    (tokens, scores, types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_hand_made_model() {
        let m = ModelProto {
            pieces: vec![
                SentencePiece {
                    piece: Some("<unk>".into()),
                    score: Some(0.0),
                    r#type: Some(2),
                },
                SentencePiece {
                    piece: Some("▁a".into()),
                    score: Some(-1.5),
                    r#type: None,
                },
                SentencePiece {
                    piece: Some("<0x00>".into()),
                    score: None,
                    r#type: Some(6),
                },
            ],
            trainer_spec: None,
            normalizer_spec: None,
        };
        let bytes = m.encode_to_vec();
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        let (t, s, ty) = base_vocab(&back, 4);
        assert_eq!(t, ["<unk>", "▁a", "<0x00>", "[PAD3]"]);
        assert_eq!(s, [0.0, -1.5, 0.0, -10000.0]);
        assert_eq!(
            ty,
            [
                TokenType::Unknown,
                TokenType::Normal,
                TokenType::Byte,
                TokenType::Unused
            ]
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.model");
        std::fs::write(&p, [0xffu8, 0xff, 0xff]).unwrap();
        assert!(matches!(load_model(&p), Err(Error::InvalidFile { .. })));
    }
}
