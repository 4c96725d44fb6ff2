#![allow(dead_code)]

pub mod data;
pub mod s3;
