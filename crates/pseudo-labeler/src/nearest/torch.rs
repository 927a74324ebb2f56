//! The libtorch engine: the points live on the device once; each search uploads the
//! centroids and runs `||c||^2 - 2 x.c` as one `addmm` per block of points, reduced on the
//! device, so only one index (or two) per point comes back.

use ndarray::ArrayView2;
use tch::{Device, Kind, Tensor};

use super::{Nearest, NearestCentroids, TopTwo};
use crate::error::Result;

/// Largest points x centroids product per block, in elements (256 MiB of f32): bounds the
/// device memory whatever N and k are.
const BLOCK_ELEMENTS: i64 = 1 << 26;

/// Nearest-centroid search with the points held as a tensor on `device`.
pub struct TorchNearest {
    points: Tensor,
    squared_norms: Tensor,
    rows: i64,
    device: Device,
}

/// Centroids prepared for a search: `-2 c^T` and `||c||^2`, on the device.
struct Prepared {
    minus_two_transposed: Tensor,
    squared_norms: Tensor,
    count: i64,
}

impl TorchNearest {
    /// Copies `points` to `device`.
    pub fn new(points: ArrayView2<'_, f32>, device: Device) -> Result<Self> {
        let _no_grad = tch::no_grad_guard();
        let rows = points.nrows() as i64;
        let points = to_tensor(points, device)?;
        let squared_norms = points
            .f_square()?
            .f_sum_dim_intlist(1, false, Kind::Float)?;
        Ok(TorchNearest {
            points,
            squared_norms,
            rows,
            device,
        })
    }

    fn prepare(&self, centroids: ArrayView2<'_, f32>) -> Result<Prepared> {
        let c = to_tensor(centroids, self.device)?;
        Ok(Prepared {
            minus_two_transposed: c.f_mul_scalar(-2.0)?.f_tr()?,
            squared_norms: c.f_square()?.f_sum_dim_intlist(1, false, Kind::Float)?,
            count: centroids.nrows() as i64,
        })
    }

    /// Partial distances `||c||^2 - 2 x.c` of each block of points, in order.
    fn for_each_block(
        &self,
        centroids: &Prepared,
        mut visit: impl FnMut(i64, Tensor) -> Result<()>,
    ) -> Result<()> {
        let step = (BLOCK_ELEMENTS / centroids.count.max(1)).max(1);
        let mut start = 0;
        while start < self.rows {
            let len = step.min(self.rows - start);
            let block = self.points.f_narrow(0, start, len)?;
            let partial = centroids
                .squared_norms
                .f_addmm(&block, &centroids.minus_two_transposed)?;
            visit(start, partial)?;
            start += len;
        }
        Ok(())
    }
}

impl TorchNearest {
    /// Squared distance to, and index of, the nearest centroid of the points of the block
    /// starting at row `start`, from the block's partial distances.
    fn best_of(&self, start: i64, partial: &Tensor) -> Result<(Tensor, Tensor)> {
        let norms = self.squared_norms.f_narrow(0, start, partial.size()[0])?;
        let (d, i) = partial.f_min_dim(1, false)?;
        Ok((d.f_add(&norms)?.f_clamp_min(0.0)?, i))
    }
}

impl NearestCentroids for TorchNearest {
    fn len(&self) -> usize {
        self.rows as usize
    }

    fn nearest(&self, centroids: ArrayView2<'_, f32>) -> Result<Nearest> {
        let _no_grad = tch::no_grad_guard();
        if self.rows == 0 {
            return Ok(Nearest {
                labels: Vec::new(),
                distances: Vec::new(),
            });
        }
        let prepared = self.prepare(centroids)?;
        let mut best = Vec::new();
        self.for_each_block(&prepared, |start, partial| {
            best.push(self.best_of(start, &partial)?);
            Ok(())
        })?;
        let (distances, labels) = gather(&best)?;
        Ok(Nearest { labels, distances })
    }

    fn nearest_two(&self, centroids: ArrayView2<'_, f32>) -> Result<Vec<TopTwo>> {
        let _no_grad = tch::no_grad_guard();
        if self.rows == 0 {
            return Ok(Vec::new());
        }
        let prepared = self.prepare(centroids)?;
        let (mut best, mut second) = (Vec::new(), Vec::new());
        self.for_each_block(&prepared, |start, mut partial| {
            let (d1, i1) = self.best_of(start, &partial)?;
            if prepared.count > 1 {
                // Mask the best centroid and take the minimum again: unlike topk, min keeps
                // the first of equal values, as the CPU engine does.
                let _masked = partial.f_scatter_value_(1, &i1.f_unsqueeze(1)?, f64::INFINITY)?;
                second.push(self.best_of(start, &partial)?);
            }
            best.push((d1, i1));
            Ok(())
        })?;
        let (d1, i1) = gather(&best)?;
        let (d2, i2) = if second.is_empty() {
            (vec![f32::INFINITY; d1.len()], vec![u32::MAX; d1.len()])
        } else {
            gather(&second)?
        };
        Ok((0..d1.len())
            .map(|p| TopTwo {
                best: i1[p],
                best_distance: d1[p],
                second: i2[p],
                second_distance: d2[p],
            })
            .collect())
    }
}

/// Distances and indices of the blocks, in order, on the host.
fn gather(parts: &[(Tensor, Tensor)]) -> Result<(Vec<f32>, Vec<u32>)> {
    let d: Vec<&Tensor> = parts.iter().map(|p| &p.0).collect();
    let i: Vec<&Tensor> = parts.iter().map(|p| &p.1).collect();
    let d = Tensor::f_cat(&d, 0)?.f_to_device(Device::Cpu)?;
    Ok((
        Vec::<f32>::try_from(&d)?,
        to_indices(&Tensor::f_cat(&i, 0)?)?,
    ))
}

/// A row-major f32 tensor of `rows` on `device`.
fn to_tensor(rows: ArrayView2<'_, f32>, device: Device) -> Result<Tensor> {
    let host = rows.as_standard_layout();
    let slice = host.as_slice().expect("standard layout");
    Ok(Tensor::f_from_slice(slice)?
        .f_view([rows.nrows() as i64, rows.ncols() as i64])?
        .f_to_device(device)?)
}

/// Centroid indices (int64 on any device) as u32 on the host.
fn to_indices(indices: &Tensor) -> Result<Vec<u32>> {
    let host = indices.f_to_device(Device::Cpu)?;
    Ok(Vec::<i64>::try_from(&host)?
        .into_iter()
        .map(|i| i as u32)
        .collect())
}
