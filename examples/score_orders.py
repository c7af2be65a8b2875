import pyarrow.compute as pc

import raydeck.data as rdata


def add_margin(batch):                            # any Ray Data batch function
    return batch.append_column("margin", pc.multiply(batch["total"], 0.2))


ds = rdata.read_table("wh.main.orders")           # parallel: rowid/key ranges, one task per file
rdata.write_table(ds.map_batches(add_margin, batch_format="pyarrow"), "wh.main.scored",
                  mode="overwrite")               # staged, all or nothing
rdata.sql_transform("wh", "SELECT region, sum(total) t FROM main.orders GROUP BY 1",
                    into="wh.main.by_region")     # pushed down into the warehouse
print(rdata.read_table("wh.main.by_region").take_all())
