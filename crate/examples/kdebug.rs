use burn::tensor::{Distribution, Tensor, Device};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use sdweb::models::nn::{merge_heads, split_heads};
fn main() {
    let dev = Device::wgpu_options().init().unwrap();
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (sq, sk, d) = (args[0], args[1], args[2]);
    let q = Tensor::<3>::random([1, sq, d], Distribution::Normal(0.0, 1.0), &dev);
    let k = Tensor::<3>::random([1, sk, d], Distribution::Normal(0.0, 1.0), &dev);
    let v = if std::env::var("VONES").is_ok() { Tensor::<3>::ones([1, sk, d], &dev) } else { Tensor::<3>::random([1, sk, d], Distribution::Normal(0.0, 1.0), &dev) };
    let k = if std::env::var("KZERO").is_ok() { Tensor::<3>::zeros([1, sk, d], &dev) } else { k };
    let qv: Vec<f32> = q.clone().into_data().convert::<f32>().to_vec().unwrap();
    let kv: Vec<f32> = k.clone().into_data().convert::<f32>().to_vec().unwrap();
    let vv: Vec<f32> = v.clone().into_data().convert::<f32>().to_vec().unwrap();
    let mut cpu = vec![0f32; sq * d];
    for i in 0..sq { let s: Vec<f64> = (0..sk).map(|j| (0..d).map(|c| qv[i*d+c] as f64 * kv[j*d+c] as f64).sum::<f64>() / (d as f64).sqrt()).collect();
      let m = s.iter().cloned().fold(f64::MIN, f64::max); let e: Vec<f64> = s.iter().map(|x| (x-m).exp()).collect(); let z: f64 = e.iter().sum();
      for c in 0..d { cpu[i*d+c] = ((0..sk).map(|j| e[j]*vv[j*d+c] as f64).sum::<f64>() / z) as f32; } }
    let h = |t: &Tensor<3>| if std::env::var("HALF").is_ok() { t.clone().cast(burn::tensor::DType::F16) } else { t.clone() };
    let (qh, kh, vh) = (h(&q), h(&k), h(&v));
    let ours = sdweb::kernels::flash_attention((&qh).into(), (&kh).into(), (&vh).into(), 1, d, false).unwrap().cast(burn::tensor::DType::F32);
    let r = if args.len() > 3 {
        let scores = q.clone().matmul(k.clone().swap_dims(1, 2)) / (d as f64).sqrt();
        burn::tensor::activation::softmax(scores, 2).matmul(v.clone())
    } else {
        merge_heads(attention(split_heads(q, 1), split_heads(k, 1), split_heads(v, 1), None, None, AttentionModuleOptions::default()))
    };
    let a: Vec<f32> = ours.into_data().convert::<f32>().to_vec().unwrap();
    let b: Vec<f32> = r.into_data().convert::<f32>().to_vec().unwrap();
    let mut worst = (0.0f32, 0usize);
    for i in 0..a.len() { let e = (a[i]-b[i]).abs(); if e > worst.0 { worst = (e, i); } }
    println!("max err {} at row {} dim {}", worst.0, worst.1 / d, worst.1 % d);
    let e1 = a.iter().zip(&cpu).map(|(x,y)| (x-y).abs()).fold(0f32, f32::max);
    let e2 = b.iter().zip(&cpu).map(|(x,y)| (x-y).abs()).fold(0f32, f32::max);
    println!("ours vs cpu {e1}, oracle vs cpu {e2}; ours row starts {:?} cpu {:?}", (0..4.min(sq)).map(|i| (a[i*d], a[i*d+1], a[i*d+2])).collect::<Vec<_>>(), (0..4.min(sq)).map(|i| cpu[i*d]).collect::<Vec<_>>());
    for i in 0..sq { let e = (0..d).map(|c| (a[i*d+c]-cpu[i*d+c]).abs()).fold(0f32, f32::max); let bad: Vec<usize> = (0..d).filter(|&c| (a[i*d+c]-cpu[i*d+c]).abs() > 1e-3).collect(); if e > 1e-3 { println!("row {i}: max {e}, {} bad dims, first {:?}", bad.len(), &bad[..bad.len().min(12)]); } }
}
