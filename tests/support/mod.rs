#![allow(dead_code)]

pub mod adoption;
pub mod archiving;
pub mod daemon;
pub mod data;
pub mod faulty_proxy;
pub mod http;
pub mod output;
pub mod postgres;
pub mod restored;
pub mod s3;
pub mod stored;
pub mod tmpfs;
pub mod webhook;
